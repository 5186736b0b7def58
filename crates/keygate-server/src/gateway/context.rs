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
//! Not-found results are never cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_storage::{Actor, CallContext, DbTime, Store};
use parking_lot::Mutex;
use uuid::Uuid;

type Key = (Uuid, Uuid, Option<i32>);
/// The context, the write epoch seen before it was read, and when it was read.
type Entry = (Arc<CallContext>, u64, Instant);

const MAX_ENTRIES: usize = 10_000;

pub struct ContextCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ContextCache {
    pub fn new(ttl: Duration) -> Self {
        ContextCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The context of `connection` for `user` (optionally pinned to a key generation).
    pub async fn get(
        &self,
        store: &Store,
        actor: Actor,
        user: Uuid,
        connection: Uuid,
        generation: Option<i32>,
        now: DbTime,
    ) -> keygate_storage::Result<Option<Arc<CallContext>>> {
        if self.ttl.is_zero() {
            return Ok(store
                .call_context(actor, user, connection, generation, now)
                .await?
                .map(Arc::new));
        }
        let key = (user, connection, generation);
        let epoch = store.write_epoch();
        if let Some((ctx, e, at)) = self.entries.lock().get(&key) {
            if *e == epoch && at.elapsed() < self.ttl {
                return Ok(Some(ctx.clone()));
            }
        }
        let loaded = store
            .call_context(actor, user, connection, generation, now)
            .await?
            .map(Arc::new);
        if let Some(ctx) = &loaded {
            let mut m = self.entries.lock();
            if m.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                m.retain(|_, (_, _, at)| at.elapsed() < ttl);
                if m.len() >= MAX_ENTRIES {
                    m.clear();
                }
            }
            m.insert(key, (ctx.clone(), epoch, Instant::now()));
        }
        Ok(loaded)
    }
}
