//! Master-key (KEK) versions and `keygate master-key rotate`.
//!
//! How an instance learns of the keys: the current master key comes from
//! `KEYGATE_MASTER_KEY` / `master.key` as always; during a rotation the old one is supplied
//! the same way as `KEYGATE_MASTER_KEY_PREVIOUS` / `master.key.previous`. The database
//! records which key it is on: `master_key_check` (the key-check value) and
//! `master_key_version` (absent = 1). At startup:
//! - the current key matches the stored check value → provider at that version (a
//!   previous key, if still supplied, is not used);
//! - else the previous key matches → a rotation is in progress: the new key is current at
//!   version+1 and wraps, the old one still unwraps;
//! - else refuse to start.
//!
//! `rotate` rewraps every user DEK under the current version in batches (compare-and-swap
//! per row, so it is resumable and safe beside a running server), then in one transaction
//! moves the check value and the version to the new key. Keys derived from the master key
//! (audit chain, site keys, webhook secrets) must not change with it, so their root — the
//! key the database was created with — is kept in `master_key_derivation_root`, wrapped
//! under the current master key and rewrapped by each rotation.
//!
//! With the OpenBao provider (`kms.rs`) the KEK versions are the Transit key's: `rotate`
//! asks Transit to rotate the key unless a rewrap is already pending (the operator rotated
//! it, or an earlier run stopped halfway), then rewraps every DEK and the root inside
//! Transit with the same resumable batches.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::sync::Arc;

use axum::http::StatusCode;
use keygate_crypto::{MasterKey, WrapContext};
use keygate_keys::{KeyError, KeyProvider, LocalKeyProvider, OpenBaoTransitProvider};
use keygate_storage::{Actor, DbTime, Json, Store, META_KEY_CHECK};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::keyfiles;
use crate::kms::root_ctx;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

/// `keygate_meta` key: the version of the master key the check value belongs to.
pub const META_KEK_VERSION: &str = "master_key_version";
/// `keygate_meta` key: base64 of the derivation root wrapped under the current master key.
pub const META_DERIVATION_ROOT: &str = "master_key_derivation_root";
/// `keygate_meta` key of the check value of the new master key that the rotation to
/// version `version` moves to, recorded by the first start with that key and the previous
/// one. Data keys already rewrapped need it: that rotation is not resumed, nor an instance
/// started, with another new key; and an instance on the old key alone stops wrapping
/// ([`CurrentKeyOnly`]). One key name per target version, so recording is an atomic
/// insert-if-absent and a finished rotation leaves nothing to clear.
pub fn meta_key_check_next(version: u32) -> String {
    format!("master_key_check_next_v{version}")
}

fn copy_key(k: &MasterKey) -> MasterKey {
    MasterKey::from_base64(k.to_base64_secret().expose_secret()).expect("own encoding parses")
}

fn raw_bytes(k: &MasterKey) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        STANDARD
            .decode(k.to_base64_secret().expose_secret())
            .expect("own encoding decodes"),
    )
}

/// The key provider for this database and the root that audit-chain and platform keys are
/// derived from.
pub struct ResolvedKeys {
    pub provider: Arc<dyn KeyProvider>,
    /// The same provider when it is OpenBao Transit (rotation needs its own calls).
    pub transit: Option<Arc<OpenBaoTransitProvider>>,
    pub root: MasterKey,
    /// True while DEKs may still be wrapped under the previous master key.
    pub rotating: bool,
}

fn meta_err(e: keygate_storage::StorageError) -> ConfigError {
    ConfigError(format!("cannot read database metadata: {e}"))
}

/// Matches `master` (and the previous key, if supplied) against the database.
pub async fn resolve(
    config: &Config,
    store: &Store,
    master: MasterKey,
) -> Result<ResolvedKeys, ConfigError> {
    let stored = store
        .meta_set_if_absent(META_KEY_CHECK, &master.key_check_value())
        .await
        .map_err(meta_err)?;
    let base: u32 = match store.meta_get(META_KEK_VERSION).await.map_err(meta_err)? {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError("keygate_meta master_key_version is corrupt".into()))?,
    };
    let previous = keyfiles::load_previous_master_key(config)?;
    let (provider, fallback_root, rotating) = if master.verify_key_check_value(&stored) {
        if previous.is_some() {
            tracing::info!("a previous master key is supplied but the database is already on the current one; it is not used and may be destroyed");
        }
        let root = copy_key(&master);
        (LocalKeyProvider::new(base, master), root, false)
    } else {
        match previous {
            Some(prev) if prev.verify_key_check_value(&stored) => {
                let name = meta_key_check_next(base + 1);
                let mine = master.key_check_value();
                let next = store
                    .meta_set_if_absent(&name, &mine)
                    .await
                    .map_err(meta_err)?;
                if !master.verify_key_check_value(&next) {
                    // another new key was recorded: it may be replaced only while nothing is
                    // wrapped under it yet (a mistaken key, lost before use)
                    let used = !store
                        .user_keys_not_on_kek(base as i32, 1)
                        .await
                        .map_err(meta_err)?
                        .is_empty();
                    if used {
                        return Err(ConfigError(
                            "a master-key rotation to another new key is under way (data keys already rewrapped need that key): supply the new key the rotation started with; refusing to start"
                                .into(),
                        ));
                    }
                    tracing::warn!("the new master key recorded for this rotation wrapped nothing yet: it is replaced by the one supplied now");
                    store.meta_set(&name, &mine).await.map_err(meta_err)?;
                }
                tracing::warn!(
                    from = base,
                    to = base + 1,
                    "master-key rotation in progress: the new key wraps, the previous one still unwraps; run `keygate master-key rotate` to finish"
                );
                let root = copy_key(&prev);
                let p = LocalKeyProvider::new(base + 1, master)
                    .with_previous(base, prev)
                    .map_err(|e| ConfigError(format!("master keys: {e}")))?;
                (p, root, true)
            }
            _ => {
                return Err(ConfigError(
                    "master key does not match this database (key-check value differs); refusing to start"
                        .into(),
                ))
            }
        }
    };
    let root = match store
        .meta_get(META_DERIVATION_ROOT)
        .await
        .map_err(meta_err)?
    {
        None => fallback_root,
        Some(b64) => {
            let wrapped = STANDARD
                .decode(b64.trim())
                .map_err(|_| ConfigError("keygate_meta derivation root is corrupt".into()))?;
            let raw = provider
                .unwrap(&root_ctx(), &wrapped)
                .await
                .map_err(|e| ConfigError(format!("cannot unwrap the derivation root: {e}")))?;
            MasterKey::from_bytes(&raw)
                .map_err(|_| ConfigError("keygate_meta derivation root is corrupt".into()))?
        }
    };
    Ok(ResolvedKeys {
        provider: Arc::new(provider),
        transit: None,
        root,
        rotating,
    })
}

/// What one `rotate` run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// DEK versions rewrapped in this run.
    pub rewrapped: u64,
    /// Batches processed in this run.
    pub batches: u64,
    /// The database is now entirely on the current master key.
    pub complete: bool,
    /// Nothing to do: the database was already on the current key.
    pub already_current: bool,
}

fn operator() -> Caller {
    Caller::system()
}

fn audit(action: &str, metadata: serde_json::Value) -> keygate_storage::AuditEvent {
    let meta = RequestMeta {
        user_agent: Some("keygate-cli".into()),
        ..Default::default()
    };
    let mut ev = event("keys", action, &operator(), None, &meta);
    ev.reason = Some("keygate master-key rotate (command line)".into());
    ev.metadata = Json(metadata);
    ev
}

/// Rewraps every DEK under the current master key, `batch` rows at a time, stopping after
/// `max_batches` batches if given (run again to continue); once none is left, moves the
/// check value, version and derivation root to the new key in one transaction.
pub async fn rotate(
    state: &AppState,
    batch: i64,
    max_batches: Option<u64>,
) -> Result<RotateReport, ApiError> {
    if let Some(t) = &state.kms {
        return rotate_transit(state, t, batch, max_batches).await;
    }
    let provider = &state.keyring.provider;
    let store = &state.store;
    let current = provider.current_version() as i32;
    let new_check = provider.key_check_value().await?;
    let stored = store.meta_get(META_KEY_CHECK).await?.unwrap_or_default();
    let mut report = RotateReport {
        rewrapped: 0,
        batches: 0,
        complete: false,
        already_current: false,
    };
    if stored == new_check {
        if !store.user_keys_not_on_kek(current, 1).await?.is_empty() {
            return Err(ApiError::internal(
                "data keys remain under a master key version this database no longer records",
            ));
        }
        report.complete = true;
        report.already_current = true;
        return Ok(report);
    }
    if !rewrap_batches(state, current, batch, max_batches, &mut report).await? {
        return Ok(report);
    }
    // Every DEK is on the new key: move the derivation root, then the check value and the
    // version, all in one transaction.
    let root_wrapped = match store.meta_get(META_DERIVATION_ROOT).await? {
        Some(b64) => {
            let old = STANDARD
                .decode(b64.trim())
                .map_err(|_| ApiError::internal("keygate_meta derivation root is corrupt"))?;
            provider.rewrap(&root_ctx(), &old).await?
        }
        None => {
            let prev = keyfiles::load_previous_master_key(&state.config)
                .map_err(ApiError::internal)?
                .ok_or_else(|| {
                    ApiError::internal("the previous master key is no longer supplied")
                })?;
            provider.wrap(&root_ctx(), &raw_bytes(&prev)).await?
        }
    };
    let version = current.to_string();
    let root_b64 = STANDARD.encode(root_wrapped);
    store
        .meta_set_all(&[
            (META_DERIVATION_ROOT, &root_b64),
            (META_KEK_VERSION, &version),
            (META_KEY_CHECK, &new_check),
        ])
        .await?;
    // Unlock sessions hold their DEK copy under the old key: they end (users unlock again).
    store.drop_vault_sessions_not_on_kek(current).await?;
    state
        .recorder
        .record(
            vec![audit(
                "master_key_rotated",
                serde_json::json!({"kek_version": current, "rewrapped": report.rewrapped}),
            )],
            vec![],
        )
        .await?;
    report.complete = true;
    Ok(report)
}

/// Rewraps DEK batches under KEK version `current` (compare-and-swap per row); `true` once
/// none is left, `false` when `max_batches` stopped it first.
async fn rewrap_batches(
    state: &AppState,
    current: i32,
    batch: i64,
    max_batches: Option<u64>,
    report: &mut RotateReport,
) -> Result<bool, ApiError> {
    let provider = &state.keyring.provider;
    let store = &state.store;
    let batch = batch.clamp(1, 10_000);
    loop {
        if max_batches.is_some_and(|m| report.batches >= m) {
            return Ok(false);
        }
        let rows = store.user_keys_not_on_kek(current, batch).await?;
        if rows.is_empty() {
            return Ok(true);
        }
        let mut n = 0u64;
        for rec in &rows {
            let Some(wrapped) = rec.wrapped_dek.as_deref() else {
                continue;
            };
            let ctx = WrapContext {
                user_id: rec.user_id,
                dek_version: rec.version as u32,
            };
            let rewrapped = provider.rewrap(&ctx, wrapped).await?;
            // compare-and-swap: a concurrent password change or shred wins, and the row is
            // picked up again (or no longer) by the next batch
            if store
                .rewrap_user_key(
                    Actor::service(),
                    rec.user_id,
                    rec.version,
                    wrapped,
                    &rewrapped,
                    current,
                    &rec.protection,
                    DbTime::now(),
                )
                .await?
            {
                n += 1;
            }
        }
        report.rewrapped += n;
        report.batches += 1;
        state
            .recorder
            .record(
                vec![audit(
                    "master_key_rewrap_batch",
                    serde_json::json!({"kek_version": current, "rewrapped": n}),
                )],
                vec![],
            )
            .await?;
    }
}

/// `rotate` with OpenBao Transit: rotate the Transit key unless a rewrap is pending, then
/// rewrap every DEK and the root (inside Transit: no DEK reaches keygate).
async fn rotate_transit(
    state: &AppState,
    transit: &OpenBaoTransitProvider,
    batch: i64,
    max_batches: Option<u64>,
) -> Result<RotateReport, ApiError> {
    let store = &state.store;
    let root_wrapped = STANDARD
        .decode(
            store
                .meta_get(META_DERIVATION_ROOT)
                .await?
                .ok_or_else(|| ApiError::internal("no wrapped root key for the openbao provider"))?
                .trim(),
        )
        .map_err(|_| ApiError::internal("keygate_meta derivation root is corrupt"))?;
    let latest = transit.refresh().await?;
    let pending = transit.needs_rewrap(&root_wrapped)?
        || !store
            .user_keys_not_on_kek(latest as i32, 1)
            .await?
            .is_empty();
    let current = if pending {
        latest
    } else {
        let v = transit.rotate().await.map_err(|e| match e {
            KeyError::Rejected { status: 403, .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "kms_rotation_refused",
                format!(
                    "OpenBao refused to rotate the Transit key (HTTP 403): rotate it there (`bao write -f {0}/keys/{1}/rotate`) or allow `update` on {0}/keys/{1}/rotate for keygate's token, then run this again",
                    state.config.openbao_mount, state.config.openbao_key
                ),
            ),
            e => e.into(),
        })?;
        state
            .recorder
            .record(
                vec![audit(
                    "master_key_kms_rotated",
                    serde_json::json!({"kek_version": v}),
                )],
                vec![],
            )
            .await?;
        v
    };
    let mut report = RotateReport {
        rewrapped: 0,
        batches: 0,
        complete: false,
        already_current: false,
    };
    if !rewrap_batches(state, current as i32, batch, max_batches, &mut report).await? {
        return Ok(report);
    }
    let root_wrapped = if transit.needs_rewrap(&root_wrapped)? {
        transit.rewrap(&root_ctx(), &root_wrapped).await?
    } else {
        root_wrapped
    };
    let new_check = transit.key_check_value().await?;
    let version = current.to_string();
    let root_b64 = STANDARD.encode(root_wrapped);
    store
        .meta_set_all(&[
            (META_DERIVATION_ROOT, &root_b64),
            (META_KEK_VERSION, &version),
            (META_KEY_CHECK, &new_check),
        ])
        .await?;
    store.drop_vault_sessions_not_on_kek(current as i32).await?;
    state
        .recorder
        .record(
            vec![audit(
                "master_key_rotated",
                serde_json::json!({"kek_version": current, "rewrapped": report.rewrapped, "provider": "openbao"}),
            )],
            vec![],
        )
        .await?;
    report.complete = true;
    Ok(report)
}

/// The local provider, refusing to wrap once the database records a newer master-key
/// version than this instance holds. After `master-key rotate` finished while this
/// instance still ran with the old key alone, its wraps would be readable only with a key
/// the operator is told may now be destroyed: it fails instead (restart it with the new
/// key). The database's version is read at most once a second.
pub struct CurrentKeyOnly {
    inner: Arc<dyn KeyProvider>,
    store: Store,
    /// When the database was last read, and whether this instance may wrap.
    seen: parking_lot::Mutex<Option<(std::time::Instant, bool)>>,
}

/// How long a read of the database's master-key version is reused.
const VERSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl CurrentKeyOnly {
    pub fn new(inner: Arc<dyn KeyProvider>, store: Store) -> Self {
        CurrentKeyOnly {
            inner,
            store,
            seen: parking_lot::Mutex::new(None),
        }
    }

    /// Whether this instance's key is the one data keys should be wrapped with: the
    /// database is on no newer version, and no rotation to another new key is under way.
    async fn may_wrap(&self) -> Result<bool, KeyError> {
        if let Some((at, ok)) = *self.seen.lock() {
            if at.elapsed() < VERSION_RECHECK {
                return Ok(ok);
            }
        }
        let unavailable = |e: keygate_storage::StorageError| KeyError::Unavailable {
            op: "wrap",
            source: Box::new(e),
        };
        let version: u32 = match self.store.meta_get(META_KEK_VERSION).await {
            Ok(None) => 1,
            Ok(Some(v)) => v
                .trim()
                .parse()
                .map_err(|_| KeyError::Config("keygate_meta master_key_version is corrupt"))?,
            Err(e) => return Err(unavailable(e)),
        };
        let held = self.inner.current_version();
        let ok = if version > held {
            false
        } else if version == held {
            // on the database's current key: unless a rotation away from it has started
            match self.store.meta_get(&meta_key_check_next(version + 1)).await {
                Ok(None) => true,
                Ok(Some(_)) => false,
                Err(e) => return Err(unavailable(e)),
            }
        } else {
            // rotating: the new key this instance holds must be the rotation's
            let mine = self.inner.key_check_value().await?;
            match self.store.meta_get(&meta_key_check_next(held)).await {
                Ok(Some(next)) => next.trim() == mine,
                Ok(None) => false,
                Err(e) => return Err(unavailable(e)),
            }
        };
        *self.seen.lock() = Some((std::time::Instant::now(), ok));
        Ok(ok)
    }
}

#[async_trait::async_trait]
impl KeyProvider for CurrentKeyOnly {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn current_version(&self) -> u32 {
        self.inner.current_version()
    }

    fn wrapped_version(&self, wrapped: &[u8]) -> Result<u32, KeyError> {
        self.inner.wrapped_version(wrapped)
    }

    async fn wrap(&self, ctx: &WrapContext, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        if !self.may_wrap().await? {
            tracing::error!(
                held = self.inner.current_version(),
                "a master-key rotation to a key this instance does not hold has started or finished: refusing to wrap; restart with the new master key (and the old one as previous)"
            );
            // 503 `key_provider_unavailable`: a retry may reach an instance with the new key
            return Err(KeyError::Unavailable {
                op: "wrap",
                source: "this instance's master key is older than the database's; restart it with the new master key".into(),
            });
        }
        self.inner.wrap(ctx, plaintext).await
    }

    async fn unwrap(
        &self,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.inner.unwrap(ctx, wrapped).await
    }

    async fn key_check_value(&self) -> Result<String, KeyError> {
        self.inner.key_check_value().await
    }
}
