//! Token revocations ("sign out everywhere"): a user's tokens issued before a cut-off are
//! refused on every instance. The cut-offs live in `token_revocations`; each instance
//! keeps them in memory ([`Revocations`]), reloads them every second, and refuses
//! every token while its copy is older than [`STALE_AFTER`] (fail closed: an instance that
//! cannot see the database cannot know what was revoked).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use keygate_storage::{DbTime, Store};
use parking_lot::RwLock;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;

/// How often an instance reloads the cut-offs.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Past this without a successful reload, every token is refused.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// The cut-offs, per user (Unix seconds: tokens with an `iat` before it are refused).
#[derive(Default)]
pub struct Revocations {
    /// `None`: not tied to a database (a unit test's authenticator): refuses nothing.
    store: Option<Store>,
    cutoffs: RwLock<HashMap<Uuid, i64>>,
    /// Revoked sign-ins (`Caller::sign_in`: one token, or one session's tokens) by user
    /// ([`Uuid::nil`] for a service-role token without `sub`), with the Unix second they
    /// stop mattering (the token's `exp`, its leeway and a minute).
    sign_ins: RwLock<HashMap<(Uuid, Uuid), i64>>,
    /// Unix ms of the last successful reload.
    loaded_ms: AtomicI64,
}

impl Revocations {
    /// Cut-offs kept from `store`; call [`Revocations::reload`] before use.
    pub fn new(store: Store) -> Revocations {
        Revocations {
            store: Some(store),
            ..Default::default()
        }
    }

    /// Reads every cut-off (one row per user who ever signed out everywhere). A cut-off
    /// only ever moves on, so what is read is merged in by the later of the two: a
    /// revocation noted here while the read ran is kept, and no instance's clock decides
    /// which rows are read.
    pub async fn reload(&self) -> Result<(), keygate_storage::StorageError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let rows = store.token_revocations().await?;
        let now = chrono::Utc::now();
        let revoked = store.revoked_sign_ins(DbTime::from(now)).await?;
        {
            // revocations only ever add up: noted here, or read, until the token expires
            let mut map = self.sign_ins.write();
            for (user, sign_in, exp) in &revoked {
                let e = map.entry((*user, *sign_in)).or_insert(exp.0.timestamp());
                *e = (*e).max(exp.0.timestamp());
            }
            map.retain(|_, exp| *exp >= now.timestamp());
        }
        {
            let mut map = self.cutoffs.write();
            for r in &rows {
                let before = r.issued_before.0.timestamp();
                let e = map.entry(r.user_id).or_insert(before);
                *e = (*e).max(before);
            }
        }
        self.loaded_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        Ok(())
    }

    /// `user`'s cut-off (Unix seconds), if they ever signed out everywhere.
    pub fn cutoff(&self, user: Uuid) -> Option<i64> {
        self.cutoffs.read().get(&user).copied()
    }

    /// A revocation made here: in force on this instance at once.
    pub fn note(&self, user: Uuid, issued_before: DbTime) {
        let before = issued_before.0.timestamp();
        let mut map = self.cutoffs.write();
        let e = map.entry(user).or_insert(before);
        *e = (*e).max(before);
    }

    /// A sign-in of `user` revoked here (`POST /v1/tokens/revoke-current`): in force on
    /// this instance at once, until `until` (Unix seconds).
    pub fn note_sign_in(&self, user: Option<Uuid>, sign_in: Uuid, until: i64) {
        let mut map = self.sign_ins.write();
        let e = map
            .entry((user.unwrap_or_else(Uuid::nil), sign_in))
            .or_insert(until);
        *e = (*e).max(until);
    }

    /// Whether `user`'s sign-in `sign_in` was revoked.
    pub fn sign_in_revoked(&self, user: Option<Uuid>, sign_in: Uuid) -> bool {
        self.sign_ins
            .read()
            .contains_key(&(user.unwrap_or_else(Uuid::nil), sign_in))
    }

    /// Refuses `caller`'s token when its sign-in was revoked (service-role tokens too),
    /// when its user revoked the tokens issued before it (a token
    /// without `iat` counts as issued before any cut-off), and every token while the
    /// cut-offs are stale. Service-role tokens are the platform's own and have no
    /// cut-off (change the token secret), but can revoke themselves; console sessions are
    /// checked by `ui::session::current`.
    pub fn check(&self, caller: &Caller, issued_at: Option<i64>) -> Result<(), ApiError> {
        if self.store.is_none() {
            return Ok(());
        }
        let age = chrono::Utc::now().timestamp_millis() - self.loaded_ms.load(Ordering::Relaxed);
        if age > STALE_AFTER.as_millis() as i64 {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "revocations_unavailable",
                "token revocations could not be read from the database; try again shortly",
            ));
        }
        if self.sign_in_revoked(caller.user_id, caller.sign_in) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "this token was revoked; get a new one",
            ));
        }
        if caller.service {
            return Ok(());
        }
        let Some(user) = caller.user_id else {
            return Ok(());
        };
        match self.cutoffs.read().get(&user) {
            Some(cutoff) if issued_at.is_none_or(|iat| iat < *cutoff) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "this token was revoked (its user signed out everywhere); get a new one",
            )),
            _ => Ok(()),
        }
    }

    /// Reloads every [`REFRESH_EVERY`] for as long as the runtime lives.
    pub fn start(self: std::sync::Arc<Self>) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REFRESH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "token revocations could not be reloaded");
                }
            }
        });
    }
}
