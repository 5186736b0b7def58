//! Per-user data keys at run time: creating a user's first DEK, unwrapping DEKs through the
//! key provider (and the vault password session in password mode), and a short-TTL cache
//! of unwrapped DEKs that is zeroized on eviction, lock and shred.
//!
//! Unlock sessions store the DEK wrapped by the KEK under a *session* context (the DEK
//! version with its top bit set), so a session blob copied into `user_keys` cannot strip
//! the password layer: it would not open under the stored-key context.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_crypto::{Dek, WrapContext};
use keygate_keys::KeyProvider;
use keygate_storage::{Actor, DbTime, Store, UserKeyRecord, VaultSession};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::ApiError;

/// Top bit of the version marks a session wrap (see module docs).
pub const SESSION_BIT: u32 = 0x8000_0000;

const CACHE_TTL: Duration = Duration::from_secs(60);

/// How long a cached platform-mode DEK is used before its key row is read again: a shred
/// or a switch to password mode made through another instance stops it within this.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// How often a used unlock session's idle timeout is pushed back (see `Keyring::slide`).
const SLIDE_EVERY: Duration = Duration::from_secs(60);

struct Cached {
    dek: Arc<Dek>,
    at: Instant,
    password: bool,
    /// When the key row was last seen usable (platform mode).
    checked: Instant,
}

/// (user, DEK version) -> the unwrapped DEK.
type DekCache = HashMap<(Uuid, u32), Cached>;

#[derive(Clone)]
pub struct Keyring {
    pub provider: Arc<dyn KeyProvider>,
    store: Store,
    cache: Arc<Mutex<DekCache>>,
}

/// A usable DEK and its version.
pub struct DekHandle {
    pub dek: Arc<Dek>,
    pub version: u32,
}

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>, store: Store) -> Self {
        Keyring {
            provider,
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A cached DEK; in password mode only while the unlock session is still live (checked
    /// in the database, so a lock on another instance takes effect at once); in platform
    /// mode while its key row, read again every [`RECHECK_AFTER`], is not shredded or
    /// switched to password mode (else `None`: the caller takes the uncached path, which
    /// answers `credential_shredded` or `vault_locked`).
    async fn cached(
        &self,
        actor: Actor,
        user: Uuid,
        version: u32,
    ) -> Result<Option<Arc<Dek>>, ApiError> {
        // another user's key is never served from the cache: the uncached path reads it
        // under `actor`, and row-level security decides
        if !actor.may_act_for(user) {
            return Ok(None);
        }
        let hit = self.cached_raw(user, version);
        match hit {
            Some((d, true, _)) => {
                if let Some(session) = self.store.vault_session(actor, user, DbTime::now()).await? {
                    self.slide(actor, &session).await;
                    Ok(Some(d))
                } else {
                    self.evict(user);
                    Err(ApiError::forbidden(
                        "vault_locked",
                        "the vault is locked; unlock it with the vault password",
                    ))
                }
            }
            Some((d, false, checked)) if checked.elapsed() < RECHECK_AFTER => Ok(Some(d)),
            Some((d, false, _)) => {
                let usable = self
                    .store
                    .user_key(actor, user, version as i32)
                    .await?
                    .is_some_and(|r| {
                        r.state != "shredded"
                            && r.wrapped_dek.is_some()
                            && r.protection != "password"
                    });
                if usable {
                    if let Some(e) = self.cache.lock().get_mut(&(user, version)) {
                        e.checked = Instant::now();
                    }
                    Ok(Some(d))
                } else {
                    self.evict(user);
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }

    fn cached_raw(&self, user: Uuid, version: u32) -> Option<(Arc<Dek>, bool, Instant)> {
        let mut c = self.cache.lock();
        match c.get(&(user, version)) {
            Some(e) if e.at.elapsed() < CACHE_TTL => Some((e.dek.clone(), e.password, e.checked)),
            Some(_) => {
                c.remove(&(user, version));
                None
            }
            None => None,
        }
    }

    fn put(&self, user: Uuid, version: u32, dek: Arc<Dek>, password: bool) {
        let mut c = self.cache.lock();
        if c.len() > 10_000 {
            c.retain(|_, e| e.at.elapsed() < CACHE_TTL);
        }
        let now = Instant::now();
        c.insert(
            (user, version),
            Cached {
                dek,
                at: now,
                password,
                checked: now,
            },
        );
    }

    /// Drops every cached DEK of `user` (lock, shred, password change). `Dek` zeroizes
    /// on drop once the last request holding it finishes.
    pub fn evict(&self, user: Uuid) {
        self.cache.lock().retain(|(u, _), _| *u != user);
    }

    /// A use of a password-mode DEK on the user's behalf keeps its unlock session open:
    /// the idle timeout the unlock set (`expires_at - last_used_at`) starts again, written
    /// at most once per [`SLIDE_EVERY`] (or a quarter of the timeout, when that is
    /// shorter) so a busy key does not write on every call. The
    /// platform's own uses (balance sync, token refresh jobs) do not: they would keep an
    /// idle vault unlocked for ever. Best effort: a failed write does not fail the use.
    async fn slide(&self, actor: Actor, s: &VaultSession) {
        if actor.user_id.is_none() {
            return;
        }
        let now = DbTime::now();
        let since = now.0 - s.last_used_at.0;
        let idle = s.expires_at.0 - s.last_used_at.0;
        // a short auto-lock slides more often: with a 1-minute timeout, waiting out
        // SLIDE_EVERY would let the session lock under steady use
        let every = chrono::Duration::from_std(SLIDE_EVERY)
            .unwrap_or_default()
            .min(idle / 4);
        if since < every {
            return;
        }
        if let Err(e) = self
            .store
            .touch_vault_session(actor, s.user_id, now, DbTime::new(now.0 + idle))
            .await
        {
            tracing::warn!(error = %e, "could not slide the vault's unlock session");
        }
    }

    /// The user's active DEK record, creating a platform-protected DEK on first use.
    pub async fn active_record(&self, actor: Actor, user: Uuid) -> Result<UserKeyRecord, ApiError> {
        if let Some(r) = self.store.active_user_key(actor, user).await? {
            return Ok(r);
        }
        // No active key: either a new user, or one whose keys were shredded (then nothing
        // may be sealed for them again; before this check it was a 500 on the unique key).
        if !self.store.user_keys(actor, user).await?.is_empty() {
            return Err(shredded());
        }
        let dek = Dek::generate();
        let ctx = WrapContext {
            user_id: user,
            dek_version: 1,
        };
        let wrapped = self.provider.wrap(&ctx, dek.expose_secret()).await?;
        // the version that wrapped it, not the provider's latest: Transit may have moved
        // on since, and a row labelled newer than its wrap is skipped by a rotation
        let kek_version = self.provider.wrapped_version(&wrapped)? as i32;
        let now = DbTime::now();
        let rec = UserKeyRecord {
            user_id: user,
            version: 1,
            wrapped_dek: Some(wrapped),
            kek_version,
            protection: "platform".into(),
            state: "active".into(),
            created_at: now,
            updated_at: now,
        };
        // a shred that committed in between leaves no active key: the same answer as above
        self.store
            .insert_first_user_key(actor, &rec)
            .await?
            .ok_or_else(shredded)
    }

    /// The DEK of `version` (or the active one) ready for sealing/opening. In password mode
    /// this needs a live unlock session, else `vault_locked`.
    pub async fn dek(
        &self,
        actor: Actor,
        user: Uuid,
        version: Option<u32>,
    ) -> Result<DekHandle, ApiError> {
        let rec = match version {
            None => self.active_record(actor, user).await?,
            Some(v) => {
                if let Some(d) = self.cached(actor, user, v).await? {
                    return Ok(DekHandle { dek: d, version: v });
                }
                self.store
                    .user_key(actor, user, v as i32)
                    .await?
                    .ok_or_else(|| {
                        ApiError::internal("ciphertext names a DEK version that does not exist")
                    })?
            }
        };
        let v = rec.version as u32;
        if rec.state == "shredded" || rec.wrapped_dek.is_none() {
            return Err(shredded());
        }
        if let Some(d) = self.cached(actor, user, v).await? {
            return Ok(DekHandle { dek: d, version: v });
        }
        let password = rec.protection == "password";
        let dek = if rec.protection == "password" {
            // The session's own version, or (while a DEK rotation re-seals rows) the one
            // being retired.
            let session = self.store.vault_session(actor, user, DbTime::now()).await?;
            if let Some(live) = &session {
                self.slide(actor, live).await;
            }
            let blob = session
                .and_then(|s| {
                    if s.dek_version == rec.version {
                        Some(s.session_dek)
                    } else if s.previous_dek_version == Some(rec.version) {
                        s.previous_session_dek
                    } else {
                        None
                    }
                })
                .ok_or_else(|| {
                    ApiError::forbidden(
                        "vault_locked",
                        "the vault is locked; unlock it with the vault password",
                    )
                })?;
            let ctx = WrapContext {
                user_id: user,
                dek_version: v | SESSION_BIT,
            };
            let raw = self.provider.unwrap(&ctx, &blob).await?;
            Dek::from_bytes(&raw)?
        } else {
            let ctx = WrapContext {
                user_id: user,
                dek_version: v,
            };
            let raw = self
                .provider
                .unwrap(&ctx, rec.wrapped_dek.as_deref().unwrap_or_default())
                .await?;
            Dek::from_bytes(&raw)?
        };
        let dek = Arc::new(dek);
        self.put(user, v, dek.clone(), password);
        Ok(DekHandle { dek, version: v })
    }
}

/// 410 `credential_shredded`: the user's keys were destroyed, and nothing is sealed for
/// them again.
fn shredded() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GONE,
        "credential_shredded",
        "this user's keys were destroyed (crypto-shredded)",
    )
}
