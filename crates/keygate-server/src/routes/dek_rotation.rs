//! Per-user DEK rotation: `POST /v1/vault/rotate-key` creates the next data-key version,
//! retires the old one, and re-seals every secret of the caller under the new version
//! (credential generations, integration client secrets and OAuth tokens). Reads keep
//! working throughout: each row names the DEK version it is sealed under, and retired
//! versions still open. Re-running it finishes an interrupted run (rows not yet on the
//! active version are re-sealed too).
//!
//! Password-protected vaults: the body must carry the vault password. It is checked as
//! `/v1/vault/unlock` checks it (lockout, failure count, vault access log). The new version
//! is nested exactly like the old one: `KEK(password key(DEK))`, with the vault's own KDF
//! parameters and salt, so the same password opens it and the `vaults` row is unchanged.
//! An unlock session, if one is live, is carried over in the transaction that activates
//! the new version: it then holds the new DEK and, until re-sealing ends, the retired one
//! (`vault_sessions.previous_*`), so every instance keeps reading rows on either version.
//! A locked vault stays locked: the DEKs the rotation needs come from the password, not
//! from a session.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use keygate_crypto::{Dek, PasswordKey, WrapContext};
use keygate_storage::{Actor, DbTime, SessionRekey, UserKeyRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::OptionalJson;
use crate::integrations::{open, seal, F_ACCESS_TOKEN, F_CLIENT_SECRET, F_REFRESH_TOKEN};
use crate::keyring::{DekHandle, SESSION_BIT};
use crate::recorder::{event, RequestMeta};
use crate::routes::vault::verify_vault_password;
use crate::secrets::{open_secrets_with, seal_into};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vault/rotate-key", post(rotate_key))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyBody {
    /// The vault password: required when the vault is password-protected, refused
    /// otherwise. The body may be omitted for a platform-protected vault.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub password: Option<SecretString>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DekRotation {
    /// The new active data-key version.
    pub dek_version: i32,
    /// The version retired by this call.
    pub retired_version: i32,
    /// Credential key generations re-sealed.
    pub credential_secrets: u64,
    /// Integration client secrets re-sealed.
    pub integrations: u64,
    /// Integration token sets re-sealed.
    pub integration_tokens: u64,
}

fn ctx(user: Uuid, version: u32) -> WrapContext {
    WrapContext {
        user_id: user,
        dek_version: version,
    }
}

/// Rotate your data key: a new DEK version seals all your secrets; the old one is retired.
/// A password-protected vault needs `password` (checked and counted like an unlock).
#[utoipa::path(post, path = "/v1/vault/rotate-key", tag = "vault", request_body(content = Option<RotateKeyBody>, description = "Optional; `password` is required for a password-protected vault."), security(("bearer" = [])),
    responses((status = 200, body = DekRotation), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 410, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem),
              (status = 503, body = crate::error::Problem)))]
pub async fn rotate_key(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<RotateKeyBody>,
) -> ApiResult<Json<DekRotation>> {
    let user = caller.user()?;
    let actor = caller.actor();
    let body = body.unwrap_or_default();
    // taken before the vault and key are read (see `verify_vault_password`)
    let turn = crate::heavy::one_per_user(user, crate::heavy::WAIT).await?;
    let old = s.keyring.active_record(actor, user).await?;
    let next = s
        .store
        .user_keys(actor, user)
        .await?
        .iter()
        .map(|k| k.version)
        .max()
        .unwrap_or(old.version)
        + 1;
    let provider = &s.keyring.provider;
    let new_dek = Dek::generate();
    let new_ctx = ctx(user, next as u32);
    let (wrapped, mut source, rekey) = if old.protection == "password" {
        let password = body.password.ok_or_else(|| {
            ApiError::field(
                "password",
                "required: this vault is password-protected (the vault password)",
            )
        })?;
        let vault = s
            .store
            .vault(actor, user)
            .await?
            .ok_or_else(|| ApiError::internal("password-protected data key without a vault"))?;
        let (pk, old_dek) = verify_vault_password(
            &s,
            &caller,
            &meta,
            &vault,
            &old,
            &password,
            "rotate_key",
            &turn,
        )
        .await?;
        // nested like the old version: KEK(password key(DEK)), same KDF and salt
        let inner = pk.seal_dek(&new_ctx, new_dek.expose_secret());
        let wrapped = provider.wrap(&new_ctx, &inner).await?;
        let rekey = match s.store.vault_session(actor, user, DbTime::now()).await? {
            None => None,
            Some(_) => {
                let session_dek = provider
                    .wrap(
                        &ctx(user, next as u32 | SESSION_BIT),
                        new_dek.expose_secret(),
                    )
                    .await?;
                let previous_session_dek = provider
                    .wrap(
                        &ctx(user, old.version as u32 | SESSION_BIT),
                        old_dek.expose_secret(),
                    )
                    .await?;
                // the older of the two wraps' versions: a rotation that has moved past it
                // ends the session (the user unlocks again) rather than leave a copy on it
                let kek_version = provider
                    .wrapped_version(&session_dek)?
                    .min(provider.wrapped_version(&previous_session_dek)?)
                    as i32;
                Some(SessionRekey {
                    session_dek,
                    previous_session_dek,
                    previous_dek_version: old.version,
                    kek_version,
                    now: DbTime::now(),
                })
            }
        };
        let mut known = HashMap::new();
        known.insert(old.version as u32, Arc::new(old_dek));
        (
            wrapped,
            OldKeys::Password {
                pk: Box::new(pk),
                known,
            },
            rekey,
        )
    } else {
        if body.password.is_some() {
            return Err(ApiError::conflict(
                "vault_not_password_protected",
                "this vault has no password; rotate without one",
            ));
        }
        let wrapped = provider.wrap(&new_ctx, new_dek.expose_secret()).await?;
        (wrapped, OldKeys::Keyring, None)
    };
    // the version that wrapped it (see `Keyring::active_record`)
    let kek_version = provider.wrapped_version(&wrapped)? as i32;
    let now = DbTime::now();
    s.store
        .add_user_key_version(
            actor,
            &UserKeyRecord {
                user_id: user,
                version: next,
                wrapped_dek: Some(wrapped),
                kek_version,
                protection: old.protection.clone(),
                state: "active".into(),
                created_at: now,
                updated_at: now,
            },
            &old,
            rekey.as_ref(),
        )
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict(_) => ApiError::conflict(
                "rotation_in_progress",
                "the data key changed during the rotation (another rotation, a shred or a vault password change); retry",
            ),
            e => e.into(),
        })?;
    let new = DekHandle {
        dek: Arc::new(new_dek),
        version: next as u32,
    };
    let (credential_secrets, integrations, integration_tokens) =
        reseal_all(&s, actor, user, &new, &mut source).await?;
    if rekey.is_some() {
        s.store.end_session_rekey(actor, user).await?;
    }
    let mut ev = event("vault", "rotate_key", &caller, Some(user), &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "dek_version": next, "retired_version": old.version, "protection": old.protection,
        "credential_secrets": credential_secrets, "integrations": integrations,
        "integration_tokens": integration_tokens,
    }));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(Json(DekRotation {
        dek_version: next,
        retired_version: old.version,
        credential_secrets,
        integrations,
        integration_tokens,
    }))
}

/// Where the DEKs of versions being rotated away from come from.
enum OldKeys {
    /// Platform mode: the keyring unwraps any version with the KEK.
    Keyring,
    /// Password mode: the versions opened with the password key so far. A version still
    /// wrapped for the platform (rotated before the password was set) opens through the
    /// keyring.
    Password {
        pk: Box<PasswordKey>,
        known: HashMap<u32, Arc<Dek>>,
    },
}

impl OldKeys {
    async fn dek(
        &mut self,
        s: &AppState,
        actor: Actor,
        user: Uuid,
        version: u32,
    ) -> ApiResult<DekHandle> {
        let OldKeys::Password { pk, known } = self else {
            return s.keyring.dek(actor, user, Some(version)).await;
        };
        if let Some(d) = known.get(&version) {
            return Ok(DekHandle {
                dek: d.clone(),
                version,
            });
        }
        let rec = s
            .store
            .user_key(actor, user, version as i32)
            .await?
            .ok_or_else(|| {
                ApiError::internal("ciphertext names a DEK version that does not exist")
            })?;
        if rec.protection != "password" {
            return s.keyring.dek(actor, user, Some(version)).await;
        }
        let c = ctx(user, version);
        let wrapped = rec.wrapped_dek.as_deref().ok_or_else(|| {
            ApiError::internal("a row is sealed under a destroyed data-key version")
        })?;
        let inner = s.keyring.provider.unwrap(&c, wrapped).await?;
        let dek = Arc::new(pk.open_dek(&c, &inner).map_err(|_| {
            ApiError::internal("a retired data-key version does not open with the vault password")
        })?);
        known.insert(version, dek.clone());
        Ok(DekHandle { dek, version })
    }
}

/// Re-seals every row of `user` not on `new.version`.
async fn reseal_all(
    s: &AppState,
    actor: Actor,
    user: Uuid,
    new: &DekHandle,
    old: &mut OldKeys,
) -> ApiResult<(u64, u64, u64)> {
    let current = new.version as i32;
    let mut creds = 0u64;
    // bounded: every pass either re-seals rows or finds none left
    for _ in 0..10_000 {
        let rows = s
            .store
            .secrets_not_on_dek(actor, user, current, 100)
            .await?;
        if rows.is_empty() {
            break;
        }
        for rec in rows {
            let d = old.dek(s, actor, user, rec.dek_version as u32).await?;
            let plain = open_secrets_with(&d, &rec)?;
            let mut fresh = rec.clone();
            seal_into(&mut fresh, new, &plain);
            if s.store
                .reseal_secret(actor, &fresh, rec.dek_version)
                .await?
            {
                creds += 1;
            }
        }
    }
    let (mut integs, mut tokens) = (0u64, 0u64);
    let mut cursor = None;
    loop {
        let page = s.store.list_integrations(actor, user, cursor, 100).await?;
        let Some(last) = page.last().map(|i| i.id) else {
            break;
        };
        cursor = Some(last);
        for i in page {
            if i.dek_version != current {
                let mut fresh = i.clone();
                if let Some(ct) = &i.client_secret_ct {
                    let d = old.dek(s, actor, user, i.dek_version as u32).await?;
                    let v = open(&d, user, i.id, F_CLIENT_SECRET, ct)?;
                    fresh.client_secret_ct =
                        Some(seal(new, user, i.id, F_CLIENT_SECRET, v.expose_secret()));
                }
                fresh.dek_version = current;
                fresh.updated_at = DbTime::now();
                s.store
                    .update_integration(actor, &fresh, Some(i.row_version))
                    .await?;
                integs += 1;
            }
            // a token rewritten between the read and the re-seal (a refresh) is read again
            let mut tries = 0;
            while let Some(t) = s.store.integration_token(actor, user, i.id).await? {
                tries += 1;
                if t.dek_version != current {
                    let d = old.dek(s, actor, user, t.dek_version as u32).await?;
                    let mut fresh = t.clone();
                    let a = open(&d, user, i.id, F_ACCESS_TOKEN, &t.access_token_ct)?;
                    fresh.access_token_ct =
                        seal(new, user, i.id, F_ACCESS_TOKEN, a.expose_secret());
                    if let Some(rt) = &t.refresh_token_ct {
                        let r = open(&d, user, i.id, F_REFRESH_TOKEN, rt)?;
                        fresh.refresh_token_ct =
                            Some(seal(new, user, i.id, F_REFRESH_TOKEN, r.expose_secret()));
                    }
                    fresh.dek_version = current;
                    fresh.updated_at = DbTime::now();
                    if !s
                        .store
                        .reseal_integration_token(actor, &fresh, &t.access_token_ct)
                        .await?
                    {
                        if tries < 5 {
                            continue;
                        }
                        return Err(ApiError::conflict(
                            "integration_busy",
                            "an integration's tokens kept changing during the rotation; run it again",
                        ));
                    }
                    tokens += 1;
                }
                break;
            }
        }
    }
    Ok((creds, integs, tokens))
}
