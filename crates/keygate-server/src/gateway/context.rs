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
/// The context, the write epoch seen before it was read, and when it was read.
type Entry = (Arc<Prepared>, u64, Instant);

/// A call context and what calls derive from it.
pub struct Prepared {
    pub ctx: CallContext,
    /// Credential and connection limits, the stricter of each (Err: unreadable).
    pub limits: Result<keygate_policy::Limits, String>,
    pub scopes: keygate_policy::ScopeSet,
    /// Base URL, environment and signed host (None: `upstream_of` says why).
    pub upstream: Option<(String, keygate_exchanges::Environment, String)>,
}

impl Prepared {
    fn new(ctx: CallContext) -> Prepared {
        let upstream = ctx
            .connection
            .exchange
            .parse()
            .ok()
            .and_then(|ex| super::upstream_of(&ctx, ex).ok());
        Prepared {
            limits: super::effective_limits(&ctx),
            scopes: super::effective_scopes(&ctx),
            upstream,
            ctx,
        }
    }
}

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
    ) -> keygate_storage::Result<Option<Arc<Prepared>>> {
        if self.ttl.is_zero() {
            return Ok(store
                .call_context(actor, user, connection, generation, now)
                .await?
                .map(|c| Arc::new(Prepared::new(c))));
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
            .map(|c| Arc::new(Prepared::new(c)));
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
