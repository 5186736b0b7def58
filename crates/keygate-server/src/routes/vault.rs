use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use keygate_crypto::{generate_salt, Dek, KdfParams, PasswordKey, WrapContext};
use keygate_storage::{
    AuditFilter, DbTime, KdfUpgrade, UnlockClaim, UserKeyRecord, VaultRecord, VaultSession,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::keyring::SESSION_BIT;
use crate::recorder::{event, RequestMeta};
use crate::routes::audit::AuditView;
use crate::routes::{page, List, Page};
use crate::state::AppState;

/// Failed unlocks in a row before lockout.
pub const MAX_FAILED_UNLOCKS: i32 = 5;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vault/setup", post(setup))
        .route("/v1/vault/unlock", post(unlock))
        .route("/v1/vault/lock", post(lock))
        .route("/v1/vault/status", get(status))
        .route("/v1/vault/settings", patch(settings))
        .route("/v1/vault/password", post(change_password))
        .route("/v1/vault/access-log", get(access_log))
        .route("/v1/vault/shred", post(shred_own))
        .route("/v1/admin/users/{id}/shred", post(shred_user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    #[schema(value_type = String)]
    pub password: SecretString,
    /// Idle minutes before auto-lock (setup only; 1–1440, default from config; change it
    /// later with `PATCH /v1/vault/settings`).
    #[serde(default)]
    pub auto_lock_minutes: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VaultStatus {
    /// platform | password
    pub protection: String,
    pub unlocked: bool,
    pub unlocked_until: Option<DateTime<Utc>>,
    pub auto_lock_minutes: Option<i32>,
    pub failed_unlock_attempts: i32,
    pub locked_out_until: Option<DateTime<Utc>>,
    pub kdf: Option<String>,
    pub last_unlocked_at: Option<DateTime<Utc>>,
    /// The last failed unlock (password mode).
    pub last_failed_unlock_at: Option<DateTime<Utc>>,
    /// Secrets decrypt only during an unlock session (password mode).
    pub require_password_on_decrypt: bool,
    /// The owner's choice for their apps (keygate stores it; unlocking is still by
    /// password): `PATCH /v1/vault/settings`.
    pub biometric_unlock_enabled: bool,
    /// When the password was set up, and the vault's settings last changed.
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub shredded: bool,
}

fn kdf_params(s: &AppState) -> KdfParams {
    if s.config.dev_fast_kdf {
        KdfParams::Argon2id {
            m_kib: 1024,
            t: 1,
            p: 1,
        }
    } else {
        KdfParams::default()
    }
}

fn check_password(p: &SecretString) -> ApiResult<()> {
    let n = p.expose_secret().chars().count();
    if !(10..=1024).contains(&n) {
        return Err(ApiError::field("password", "must be 10 to 1024 characters"));
    }
    Ok(())
}

async fn derive(p: &SecretString, salt: Vec<u8>, params: KdfParams) -> ApiResult<PasswordKey> {
    let permit = crate::heavy::turn(&crate::heavy::KDF, crate::heavy::WAIT, "vault_busy").await?;
    derive_in_turn(permit, p, salt, params).await
}

async fn derive_in_turn(
    permit: tokio::sync::SemaphorePermit<'static>,
    p: &SecretString,
    salt: Vec<u8>,
    params: KdfParams,
) -> ApiResult<PasswordKey> {
    let p = p.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = permit;
        PasswordKey::derive(&p, &salt, &params)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// Protect your vault with a password: the server can then decrypt your secrets only
/// during an unlock session. Opens one at once.
#[utoipa::path(post, path = "/v1/vault/setup", tag = "vault", request_body = PasswordBody, security(("bearer" = [])),
    responses((status = 200, body = VaultStatus), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn setup(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<PasswordBody>,
) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    let actor = caller.actor();
    check_password(&req.password)?;
    // a password only the setter knows locks the owner out of their secrets: a token
    // alone (perhaps a stolen one) must not set it
    caller.require_recent_sign_in(s.config.recent_sign_in_minutes, "set a vault password")?;
    let _one = crate::heavy::one_per_user(user, crate::heavy::WAIT).await?;
    let minutes = req
        .auto_lock_minutes
        .unwrap_or(s.config.vault_auto_lock_minutes as i32);
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "auto_lock_minutes",
            "must be between 1 and 1440",
        )]));
    }
    if s.store.vault(actor, user).await?.is_some() {
        return Err(ApiError::conflict(
            "vault_exists",
            "the vault already has a password; use /v1/vault/password to change it",
        ));
    }
    let rec = s.keyring.active_record(actor, user).await?;
    // Password protection covers the active DEK version only: rows left on a retired,
    // platform-wrapped version by an interrupted rotation would stay readable without the
    // password (fail open). Finish the rotation first.
    if s.store
        .user_rows_not_on_dek(actor, user, rec.version)
        .await?
    {
        return Err(ApiError::conflict(
            "dek_rotation_incomplete",
            "a data-key rotation did not finish; run POST /v1/vault/rotate-key again first",
        ));
    }
    let handle = s.keyring.dek(actor, user, None).await?;
    let params = kdf_params(&s);
    let salt = generate_salt().to_vec();
    let pk = derive(&req.password, salt.clone(), params).await?;
    let ctx = WrapContext {
        user_id: user,
        dek_version: handle.version,
    };
    let inner = pk.seal_dek(&ctx, handle.dek.expose_secret());
    let outer = s.keyring.provider.wrap(&ctx, &inner).await?;
    let now = DbTime::now();
    let v = VaultRecord {
        user_id: user,
        kdf: params.to_string(),
        salt,
        auto_lock_minutes: minutes,
        require_password_on_decrypt: true,
        biometric_unlock_enabled: false,
        failed_unlock_attempts: 0,
        last_failed_unlock_at: None,
        locked_out_until: None,
        last_unlocked_at: None,
        created_at: now,
        updated_at: now,
    };
    s.store
        .setup_vault(
            actor,
            &v,
            rec.version,
            rec.wrapped_dek.as_deref().unwrap_or_default(),
            &outer,
        )
        .await?;
    s.keyring.evict(user);
    open_session(
        &s,
        &caller,
        user,
        handle.version,
        &handle.dek,
        &outer,
        minutes,
        &meta,
        None,
    )
    .await?;
    s.recorder
        .record(
            vec![event("vault", "setup", &caller, Some(user), &meta)],
            vec![],
        )
        .await?;
    status_of(&s, &caller, user).await.map(Json)
}

#[allow(clippy::too_many_arguments)]
async fn open_session(
    s: &AppState,
    caller: &Caller,
    user: Uuid,
    version: u32,
    dek: &Dek,
    opened: &[u8],
    minutes: i32,
    meta: &RequestMeta,
    upgrade: Option<KdfUpgrade<'_>>,
) -> ApiResult<DateTime<Utc>> {
    let ctx = WrapContext {
        user_id: user,
        dek_version: version | SESSION_BIT,
    };
    let session_dek = s.keyring.provider.wrap(&ctx, dek.expose_secret()).await?;
    // the version that wrapped it (see `Keyring::active_record`)
    let kek_version = s.keyring.provider.wrapped_version(&session_dek)? as i32;
    let now = DbTime::now();
    let until = DbTime::new(now.0 + Duration::minutes(minutes as i64));
    s.store
        .open_vault_session(
            caller.actor(),
            &VaultSession {
                user_id: user,
                session_id: caller.sign_in,
                session_dek,
                dek_version: version as i32,
                kek_version,
                unlocked_at: now,
                last_used_at: now,
                expires_at: until,
                ip_address: meta.ip.clone(),
                previous_session_dek: None,
                previous_dek_version: None,
            },
            opened,
            upgrade,
        )
        .await?;
    Ok(until.0)
}

/// Checks `password` against the vault as `/v1/vault/unlock` does. Refused while locked
/// out (429 `vault_locked_out`). A wrong password is counted (five in a row lock the vault
/// out with a growing backoff), recorded in the vault access log under `action`, and
/// refused (403 `wrong_password`). Returns the password key and the DEK of `rec`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verify_vault_password(
    s: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    v: &VaultRecord,
    rec: &UserKeyRecord,
    password: &SecretString,
    action: &str,
    // The user's turn (`crate::heavy::one_per_user`), taken before `v` and `rec` were
    // read: a check queued behind a password change then reads the changed records.
    _turn: &crate::heavy::UserTurn,
) -> ApiResult<(PasswordKey, Dek)> {
    let user = v.user_id;
    let now = DbTime::now();
    let locked_out = |until: DbTime| async move {
        let secs = (until.0 - now.0).num_seconds().max(1) as u64;
        let mut ev = event("vault", action, caller, Some(user), meta);
        ev.success = false;
        ev.reason = Some("locked out".into());
        s.recorder.record(vec![ev], vec![]).await?;
        Err(ApiError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "vault_locked_out",
            detail: format!("too many failed unlocks; try again in {secs} s"),
            retry_after: Some(secs),
        })
    };
    if let Some(until) = v.locked_out_until.filter(|u| *u > now) {
        return locked_out(until).await;
    }
    // What can fail without a password being tried (the KMS, stored parameters) comes
    // before the attempt is counted.
    let ctx = WrapContext {
        user_id: user,
        dek_version: rec.version as u32,
    };
    let inner = s
        .keyring
        .provider
        .unwrap(&ctx, rec.wrapped_dek.as_deref().unwrap_or_default())
        .await?;
    let params = KdfParams::parse(&v.kdf)?;
    // A turn at the bounded derivations (`crate::heavy`) before the attempt is counted:
    // a busy server (503 `vault_busy`) counts no check it did not make.
    let permit = crate::heavy::turn(&crate::heavy::KDF, crate::heavy::WAIT, "vault_busy").await?;
    // The attempt is counted as a failure before Argon2id runs (see
    // `Store::claim_unlock_attempt`): parallel guesses cannot all pass the check above.
    let lockout = move |failed: i32| {
        (failed >= MAX_FAILED_UNLOCKS).then(|| {
            let exp = (failed - MAX_FAILED_UNLOCKS).min(10) as u32;
            DbTime::new(now.0 + Duration::seconds(60 * 2i64.pow(exp)).min(Duration::hours(24)))
        })
    };
    let failed = match s
        .store
        .claim_unlock_attempt(caller.actor(), user, now, lockout)
        .await?
    {
        UnlockClaim::Attempt(n) => n,
        UnlockClaim::LockedOut(until) => return locked_out(until).await,
    };
    let pk = derive_in_turn(permit, password, v.salt.clone(), params).await?;
    match pk.open_dek(&ctx, &inner) {
        Ok(dek) => {
            s.store
                .reset_unlock_failures(caller.actor(), user, DbTime::now())
                .await?;
            Ok((pk, dek))
        }
        Err(_) => {
            s.store
                .note_failed_unlock(caller.actor(), user, now)
                .await?;
            let mut ev = event("vault", action, caller, Some(user), meta);
            ev.success = false;
            ev.reason = Some("wrong password".into());
            ev.risk_score = if failed >= MAX_FAILED_UNLOCKS { 60 } else { 20 };
            ev.metadata = keygate_storage::Json(serde_json::json!({"failed_attempts": failed}));
            s.recorder.record(vec![ev], vec![]).await?;
            Err(ApiError::forbidden(
                "wrong_password",
                "the vault password is wrong",
            ))
        }
    }
}

/// Unlock with the vault password. Five failures in a row lock the vault out with a
/// growing backoff.
#[utoipa::path(post, path = "/v1/vault/unlock", tag = "vault", request_body = PasswordBody, security(("bearer" = [])),
    responses((status = 200, body = VaultStatus), (status = 403, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn unlock(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<PasswordBody>,
) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    let actor = caller.actor();
    let turn = crate::heavy::one_per_user(user, crate::heavy::WAIT).await?;
    let v = s.store.vault(actor, user).await?.ok_or_else(|| {
        ApiError::conflict(
            "vault_not_password_protected",
            "this vault has no password; set one with /v1/vault/setup",
        )
    })?;
    let rec = s.keyring.active_record(actor, user).await?;
    let version = rec.version as u32;
    let ctx = WrapContext {
        user_id: user,
        dek_version: version,
    };
    let (_, dek) =
        verify_vault_password(&s, &caller, &meta, &v, &rec, &req.password, "unlock", &turn).await?;
    let params = KdfParams::parse(&v.kdf)?;
    // PBKDF2 vaults (imported) are upgraded to Argon2id on a successful unlock.
    // Not while rows remain on a retired DEK version (an interrupted rotation): those
    // versions are wrapped under the old KDF's key, which the upgrade would orphan.
    let upgrade = if params.needs_upgrade()
        && !s
            .store
            .user_rows_not_on_dek(actor, user, rec.version)
            .await?
    {
        // The password is verified: a busy server does not turn that into a 503, it
        // upgrades on a later unlock instead.
        match crate::heavy::KDF.try_acquire() {
            Ok(permit) => {
                let np = kdf_params(&s);
                let salt = generate_salt().to_vec();
                let npk = derive_in_turn(permit, &req.password, salt.clone(), np).await?;
                let inner = npk.seal_dek(&ctx, dek.expose_secret());
                let outer = s.keyring.provider.wrap(&ctx, &inner).await?;
                Some((np.to_string(), salt, outer))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    open_session(
        &s,
        &caller,
        user,
        version,
        &dek,
        rec.wrapped_dek.as_deref().unwrap_or_default(),
        v.auto_lock_minutes,
        &meta,
        upgrade.as_ref().map(|(k, s, w)| KdfUpgrade {
            kdf: k.as_str(),
            salt: s.as_slice(),
            opened: rec.wrapped_dek.as_deref().unwrap_or_default(),
            wrapped: w.as_slice(),
        }),
    )
    .await?;
    s.keyring.evict(user);
    let mut ev = event("vault", "unlock", &caller, Some(user), &meta);
    if upgrade.is_some() {
        ev.metadata = keygate_storage::Json(serde_json::json!({"kdf_upgraded": true}));
    }
    s.recorder.record(vec![ev], vec![]).await?;
    status_of(&s, &caller, user).await.map(Json)
}

/// Lock the vault now (ends the unlock session on every instance).
#[utoipa::path(post, path = "/v1/vault/lock", tag = "vault", security(("bearer" = [])), responses((status = 200, body = VaultStatus)))]
pub async fn lock(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    s.store.close_vault_session(caller.actor(), user).await?;
    s.keyring.evict(user);
    s.recorder
        .record(
            vec![event("vault", "lock", &caller, Some(user), &meta)],
            vec![],
        )
        .await?;
    status_of(&s, &caller, user).await.map(Json)
}

async fn status_of(s: &AppState, caller: &Caller, user: Uuid) -> ApiResult<VaultStatus> {
    let actor = caller.actor();
    let v = s.store.vault(actor, user).await?;
    let keys = s.store.user_keys(actor, user).await?;
    let shredded = keys.iter().any(|k| k.state == "shredded");
    let session = s.store.vault_session(actor, user, DbTime::now()).await?;
    Ok(match v {
        None => VaultStatus {
            protection: "platform".into(),
            unlocked: !shredded,
            unlocked_until: None,
            auto_lock_minutes: None,
            failed_unlock_attempts: 0,
            locked_out_until: None,
            kdf: None,
            last_unlocked_at: None,
            last_failed_unlock_at: None,
            require_password_on_decrypt: false,
            biometric_unlock_enabled: false,
            created_at: None,
            updated_at: None,
            shredded,
        },
        Some(v) => VaultStatus {
            protection: "password".into(),
            unlocked: session.is_some() && !shredded,
            unlocked_until: session.map(|s| s.expires_at.0),
            auto_lock_minutes: Some(v.auto_lock_minutes),
            failed_unlock_attempts: v.failed_unlock_attempts,
            locked_out_until: v.locked_out_until.map(|t| t.0),
            kdf: Some(v.kdf),
            last_unlocked_at: v.last_unlocked_at.map(|t| t.0),
            last_failed_unlock_at: v.last_failed_unlock_at.map(|t| t.0),
            require_password_on_decrypt: v.require_password_on_decrypt,
            biometric_unlock_enabled: v.biometric_unlock_enabled,
            created_at: Some(v.created_at.0),
            updated_at: Some(v.updated_at.0),
            shredded,
        },
    })
}

/// Vault state: protection mode, whether unlocked and until when.
#[utoipa::path(get, path = "/v1/vault/status", tag = "vault", security(("bearer" = [])), responses((status = 200, body = VaultStatus)))]
pub async fn status(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    status_of(&s, &caller, user).await.map(Json)
}

/// A password vault's settings; a field left out keeps its value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// Idle minutes before auto-lock, 1–1440. A shorter one also brings the current
    /// unlock's end forward (to its last use plus the new minutes).
    #[serde(default)]
    pub auto_lock_minutes: Option<i32>,
    #[serde(default)]
    pub biometric_unlock_enabled: Option<bool>,
}

/// Change a password vault's auto-lock or biometric-unlock setting. Needs a fresh unlock
/// from the caller's own sign-in (a longer auto-lock keeps secrets decryptable longer);
/// 409 `vault_not_password_protected` without a password. Audited (`vault`/`settings`).
#[utoipa::path(patch, path = "/v1/vault/settings", tag = "vault", request_body = VaultSettings, security(("bearer" = [])),
    responses((status = 200, body = VaultStatus), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn settings(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<VaultSettings>,
) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    let actor = caller.actor();
    if req
        .auto_lock_minutes
        .is_some_and(|m| !(1..=1440).contains(&m))
    {
        return Err(ApiError::field(
            "auto_lock_minutes",
            "must be between 1 and 1440",
        ));
    }
    if s.store.vault(actor, user).await?.is_none() {
        return Err(ApiError::conflict(
            "vault_not_password_protected",
            "this vault has no password: set one up first (POST /v1/vault/setup)",
        ));
    }
    crate::routes::rotation::require_fresh_unlock(&s, &caller, user, "change the vault's settings")
        .await?;
    let changed = s
        .store
        .update_vault_settings(
            actor,
            user,
            req.auto_lock_minutes,
            req.biometric_unlock_enabled,
            DbTime::now(),
        )
        .await?;
    if !changed {
        return Err(ApiError::conflict(
            "vault_not_password_protected",
            "this vault has no password",
        ));
    }
    // a shorter auto-lock holds for the unlock under way too (it slides by its own idle
    // window, the one it was opened with)
    if let Some(minutes) = req.auto_lock_minutes {
        if let Some(sess) = s.store.vault_session(actor, user, DbTime::now()).await? {
            let end = DbTime::new(sess.last_used_at.0 + Duration::minutes(minutes.into()));
            if end < sess.expires_at && s.store.shorten_vault_session(actor, user, end).await? {
                s.keyring.evict(user);
            }
        }
    }
    let mut ev = event("vault", "settings", &caller, Some(user), &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "auto_lock_minutes": req.auto_lock_minutes,
        "biometric_unlock_enabled": req.biometric_unlock_enabled,
    }));
    s.recorder.record(vec![ev], vec![]).await?;
    status_of(&s, &caller, user).await.map(Json)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// Change the vault password: rewraps only the data key.
#[utoipa::path(post, path = "/v1/vault/password", tag = "vault", request_body = ChangePassword, security(("bearer" = [])),
    responses((status = 200, body = VaultStatus), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<ChangePassword>,
) -> ApiResult<Json<VaultStatus>> {
    let user = caller.user()?;
    let actor = caller.actor();
    check_password(&req.new_password)
        .map_err(|_| ApiError::field("new_password", "must be 10 to 1024 characters"))?;
    let turn = crate::heavy::one_per_user(user, crate::heavy::WAIT).await?;
    let v = s.store.vault(actor, user).await?.ok_or_else(|| {
        ApiError::conflict("vault_not_password_protected", "this vault has no password")
    })?;
    let rec = s.keyring.active_record(actor, user).await?;
    // Retired DEK versions stay wrapped under the old password: while rows still need one
    // (an interrupted rotation), changing the password would orphan them.
    if s.store
        .user_rows_not_on_dek(actor, user, rec.version)
        .await?
    {
        return Err(ApiError::conflict(
            "dek_rotation_incomplete",
            "a data-key rotation did not finish; run POST /v1/vault/rotate-key again first",
        ));
    }
    let ctx = WrapContext {
        user_id: user,
        dek_version: rec.version as u32,
    };
    let wrapped = rec.wrapped_dek.clone().unwrap_or_default();
    // Counted like an unlock (lockout included): this is a password guess too.
    let (_, dek) = verify_vault_password(
        &s,
        &caller,
        &meta,
        &v,
        &rec,
        &req.current_password,
        "password_change",
        &turn,
    )
    .await?;
    let params = kdf_params(&s);
    let salt = generate_salt().to_vec();
    let new = derive(&req.new_password, salt.clone(), params).await?;
    let outer = s
        .keyring
        .provider
        .wrap(&ctx, &new.seal_dek(&ctx, dek.expose_secret()))
        .await?;
    s.store
        .change_vault_password(
            actor,
            user,
            &params.to_string(),
            &salt,
            rec.version,
            &wrapped,
            &outer,
            DbTime::now(),
        )
        .await?;
    s.keyring.evict(user);
    s.recorder
        .record(
            vec![event(
                "vault",
                "password_change",
                &caller,
                Some(user),
                &meta,
            )],
            vec![],
        )
        .await?;
    // The change ended every unlock (one made with the old password by someone else
    // included); the caller, who just proved the password, gets one of its own. The
    // change has committed: if that unlock cannot be opened (the key provider is down, a
    // rotation or shred came in between), the answer says so by `unlocked: false`, and an
    // unlock with the new password opens one.
    if let Err(e) = open_session(
        &s,
        &caller,
        user,
        rec.version as u32,
        &dek,
        &outer,
        v.auto_lock_minutes,
        &meta,
        None,
    )
    .await
    {
        tracing::warn!(
            error = e.code(),
            "vault password changed; the caller's unlock was not reopened"
        );
    }
    s.keyring.evict(user);
    status_of(&s, &caller, user).await.map(Json)
}

/// Your vault access log (setup, unlocks, failed unlocks, locks, shredding).
#[utoipa::path(get, path = "/v1/vault/access-log", tag = "vault", params(Page), security(("bearer" = [])),
    responses((status = 200, body = List<AuditView>)))]
pub async fn access_log(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<AuditView>>> {
    let user = caller.user()?;
    let limit = p.limit()?;
    let f = AuditFilter {
        user_id: Some(user),
        category: Some("vault".into()),
        before_seq: p.cursor_i64()?,
        ..Default::default()
    };
    let rows = s.store.list_audit(caller.actor(), &f, limit + 1).await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.seq.to_string(),
        AuditView::from,
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShredBody {
    /// Must be the literal `SHRED ALL MY SECRETS` (irreversible).
    pub confirm: String,
}

const SHRED_CONFIRM: &str = "SHRED ALL MY SECRETS";

async fn shred(
    s: &AppState,
    caller: &Caller,
    user: Uuid,
    meta: &RequestMeta,
    confirm: &str,
) -> ApiResult<StatusCode> {
    if confirm != SHRED_CONFIRM {
        return Err(ApiError::field(
            "confirm",
            format!("type exactly `{SHRED_CONFIRM}`"),
        ));
    }
    // irreversible: a recent sign-in (the owner's, or the admin's), not a token alone; a
    // service-role caller is the platform's backend. Not an unlock: a user who forgot
    // the vault password must still be able to shred and start over.
    caller.require_recent_sign_in(s.config.recent_sign_in_minutes, "shred secrets")?;
    // another user's keys (an admin's shred of them, the platform's): the service
    // identity; one's own, one's own identity, so row-level security still checks that
    // every row touched is the caller's
    let actor = if caller.service || caller.user_id != Some(user) {
        keygate_storage::Actor::service()
    } else {
        caller.actor()
    };
    let mut ev = event("vault", "shred", caller, Some(user), meta);
    ev.risk_score = 80;
    ev.risk_reasons = keygate_storage::Json(vec!["all secrets of the user destroyed".into()]);
    // the shred and its audit event commit together
    let shred = s
        .store
        .shred_user_keys(
            actor,
            user,
            DbTime::now(),
            |_| vec![ev],
            s.chain_key.as_ref(),
        )
        .await;
    s.keyring.evict(user);
    shred?;
    Ok(StatusCode::NO_CONTENT)
}

/// Crypto-shred your own secrets: destroys your data keys; metadata and audit remain.
#[utoipa::path(post, path = "/v1/vault/shred", tag = "vault", request_body = ShredBody, security(("bearer" = [])),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn shred_own(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<ShredBody>,
) -> ApiResult<StatusCode> {
    let user = caller.user()?;
    shred(&s, &caller, user, &meta, &req.confirm).await
}

/// Admin: crypto-shred a user's secrets.
#[utoipa::path(post, path = "/v1/admin/users/{id}/shred", tag = "admin", params(("id" = Uuid, Path)), request_body = ShredBody, security(("bearer" = [])),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn shred_user(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<ShredBody>,
) -> ApiResult<StatusCode> {
    if !(caller.admin || caller.service) {
        return Err(ApiError::not_found("resource"));
    }
    shred(&s, &caller, id, &meta, &req.confirm).await
}
