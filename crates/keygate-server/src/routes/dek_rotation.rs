//! Per-user DEK rotation: `POST /v1/vault/rotate-key` creates the next data-key version,
//! retires the old one, and re-seals every secret of the caller under the new version
//! (credential generations, integration client secrets and OAuth tokens). Reads keep
//! working throughout: each row names the DEK version it is sealed under, and retired
//! versions still unwrap. Re-running it finishes an interrupted run (rows not yet on the
//! active version are re-sealed first).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use keygate_crypto::{Dek, WrapContext};
use keygate_storage::{Actor, DbTime, UserKeyRecord};
use secrecy::ExposeSecret;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::integrations::{open, seal, F_ACCESS_TOKEN, F_CLIENT_SECRET, F_REFRESH_TOKEN};
use crate::recorder::{event, RequestMeta};
use crate::secrets::{open_secrets, seal_into};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/vault/rotate-key", post(rotate_key))
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

/// Rotate your data key: a new DEK version seals all your secrets; the old one is retired.
#[utoipa::path(post, path = "/v1/vault/rotate-key", tag = "vault", security(("bearer" = [])),
    responses((status = 200, body = DekRotation), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 410, body = crate::error::Problem)))]
pub async fn rotate_key(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
) -> ApiResult<Json<DekRotation>> {
    let user = caller.user()?;
    let actor = caller.actor();
    let old = s.keyring.active_record(actor, user).await?;
    if old.protection == "password" {
        return Err(ApiError::conflict(
            "vault_password_protected",
            "data-key rotation is not yet available for password-protected vaults",
        ));
    }
    let next = s
        .store
        .user_keys(actor, user)
        .await?
        .iter()
        .map(|k| k.version)
        .max()
        .unwrap_or(old.version)
        + 1;
    let dek = Dek::generate();
    let ctx = WrapContext {
        user_id: user,
        dek_version: next as u32,
    };
    let wrapped = s.keyring.provider.wrap(&ctx, dek.expose_secret()).await?;
    drop(dek);
    let now = DbTime::now();
    s.store
        .add_user_key_version(
            actor,
            &UserKeyRecord {
                user_id: user,
                version: next,
                wrapped_dek: Some(wrapped),
                kek_version: s.keyring.provider.current_version() as i32,
                protection: "platform".into(),
                state: "active".into(),
                created_at: now,
                updated_at: now,
            },
        )
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict(_) => ApiError::conflict(
                "rotation_in_progress",
                "another data-key rotation for this user is running; retry",
            ),
            e => e.into(),
        })?;
    let (credential_secrets, integrations, integration_tokens) =
        reseal_all(&s, actor, user).await?;
    let mut ev = event("vault", "rotate_key", &caller, Some(user), &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "dek_version": next, "retired_version": old.version,
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

/// Re-seals every row of `user` not on the active DEK version.
async fn reseal_all(s: &AppState, actor: Actor, user: Uuid) -> ApiResult<(u64, u64, u64)> {
    let new = s.keyring.dek(actor, user, None).await?;
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
            let plain = open_secrets(&s.keyring, actor, &rec).await?;
            let mut fresh = rec.clone();
            seal_into(&mut fresh, &new, &plain);
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
                    let d = s
                        .keyring
                        .dek(actor, user, Some(i.dek_version as u32))
                        .await?;
                    let v = open(&d, user, i.id, F_CLIENT_SECRET, ct)?;
                    fresh.client_secret_ct =
                        Some(seal(&new, user, i.id, F_CLIENT_SECRET, v.expose_secret()));
                }
                fresh.dek_version = current;
                fresh.updated_at = DbTime::now();
                s.store
                    .update_integration(actor, &fresh, Some(i.row_version))
                    .await?;
                integs += 1;
            }
            if let Some(t) = s.store.integration_token(actor, user, i.id).await? {
                if t.dek_version != current {
                    let d = s
                        .keyring
                        .dek(actor, user, Some(t.dek_version as u32))
                        .await?;
                    let mut fresh = t.clone();
                    let a = open(&d, user, i.id, F_ACCESS_TOKEN, &t.access_token_ct)?;
                    fresh.access_token_ct =
                        seal(&new, user, i.id, F_ACCESS_TOKEN, a.expose_secret());
                    if let Some(rt) = &t.refresh_token_ct {
                        let r = open(&d, user, i.id, F_REFRESH_TOKEN, rt)?;
                        fresh.refresh_token_ct =
                            Some(seal(&new, user, i.id, F_REFRESH_TOKEN, r.expose_secret()));
                    }
                    fresh.dek_version = current;
                    fresh.updated_at = DbTime::now();
                    s.store.put_integration_token(actor, &fresh).await?;
                    tokens += 1;
                }
            }
        }
    }
    Ok((creds, integs, tokens))
}
