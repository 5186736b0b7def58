//! Key pairs generated inside keygate (DESIGN.md §4, §7): for exchanges that accept
//! self-generated keys (Binance Ed25519), keygate creates the pair, seals the private key
//! and hands out only the public key. The credential stays `pending` (it cannot sign) until
//! the exchange's API key id is attached; no shared secret exists at any point.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keygate_exchanges::keygen::{generate_ed25519, generate_rsa};
use keygate_exchanges::ExchangeId;
use keygate_storage::{CredentialRecord, DbTime, Json as DbJson};
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath};
use crate::recorder::{event, RequestMeta};
use crate::routes::credentials::{
    check_label, parse_limits, parse_permissions, sealed_generation, with_etag,
};
use crate::secrets::{hint, open_secrets, seal_into, PlainSecrets};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateCredential {
    /// `binance` or `binanceusdm` (exchanges that accept self-generated Ed25519 keys).
    pub exchange: String,
    pub label: String,
    /// `production` (default) or `testnet`.
    pub environment: Option<String>,
    pub permissions: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Value>,
    /// `ed25519` (default) or `rsa` (2048-bit); Binance accepts both.
    pub key_type: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachKey {
    /// The API key id the exchange assigned when the public key was registered.
    #[schema(value_type = String)]
    pub api_key: SecretString,
}

/// Generate an Ed25519 (or RSA) key pair inside keygate: the response carries only the public key
/// (register it at the exchange), the credential is `pending` until its key id is attached.
#[utoipa::path(post, path = "/v1/credentials/generate", tag = "credentials", request_body = GenerateCredential,
    security(("bearer" = [])),
    responses((status = 201, body = crate::routes::credentials::CredentialView), (status = 422, body = crate::error::Problem)))]
pub async fn generate(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<GenerateCredential>,
) -> ApiResult<Response> {
    let user = caller.user()?;
    let mut errors = Vec::new();
    let ex = req.exchange.parse::<ExchangeId>().ok();
    if !matches!(ex, Some(ExchangeId::Binance | ExchangeId::Binanceusdm)) {
        errors.push(FieldError::new(
            "exchange",
            "keygate generates key pairs for exchanges that accept self-generated Ed25519 keys: binance, binanceusdm",
        ));
    }
    let env = req.environment.as_deref().unwrap_or("production");
    if !matches!(env, "production" | "testnet") {
        errors.push(FieldError::new(
            "environment",
            "must be production or testnet",
        ));
    }
    check_label(&req.label, &mut errors);
    let permissions = parse_permissions(req.permissions, &mut errors);
    let limits = parse_limits(req.limits, "limits", &mut errors);
    let key_type = req.key_type.as_deref().unwrap_or("ed25519");
    if !matches!(key_type, "ed25519" | "rsa") {
        errors.push(FieldError::new("key_type", "must be ed25519 or rsa"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let ex = ex.unwrap_or(ExchangeId::Binance);
    let pair = if key_type == "rsa" {
        // RSA key generation is CPU-heavy: off the async workers, a few at a time.
        let permit =
            crate::heavy::turn(&crate::heavy::KEYGEN, crate::heavy::WAIT, "keygen_busy").await?;
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            generate_rsa(2048)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
    } else {
        generate_ed25519()
    };
    let plain = PlainSecrets {
        api_key: SecretString::from(""),
        api_secret: None,
        passphrase: None,
        private_key: Some(pair.private_pem),
    };
    let actor = caller.actor();
    let dek = s.keyring.dek(actor, user, None).await?;
    let now = DbTime::now();
    let id = Uuid::now_v7();
    let secret = sealed_generation(id, user, 1, None, 0, now, &dek, &plain);
    drop(plain);
    let rec = CredentialRecord {
        id,
        user_id: user,
        exchange: ex.as_str().into(),
        label: req.label,
        environment: env.into(),
        status: "pending".into(),
        key_type: key_type.into(),
        api_key_hint: None,
        public_key: Some(pair.public_pem),
        permissions: DbJson(permissions),
        limits: DbJson(limits),
        current_generation: 1,
        expires_at: None,
        usage_count: 0,
        last_used_at: None,
        suspended_reason: None,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    s.store.create_credential(actor, &rec, &secret).await?;
    let mut ev = event("credential", "generate", &caller, Some(user), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::CREATED, rec))
}

/// Attach the exchange's API key id to a generated credential; it becomes `active`.
#[utoipa::path(post, path = "/v1/credentials/{id}/attach-key", tag = "credentials", params(("id" = Uuid, Path)),
    request_body = AttachKey, security(("bearer" = [])),
    responses((status = 200, body = crate::routes::credentials::CredentialView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn attach_key(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<AttachKey>,
) -> ApiResult<Response> {
    let user = caller.user()?;
    let key = {
        let k = secrecy::ExposeSecret::expose_secret(&req.api_key).trim();
        if k.is_empty() || k.len() > 512 || k.chars().any(|c| c.is_control()) {
            return Err(ApiError::field(
                "api_key",
                "must be 1 to 512 printable characters",
            ));
        }
        // Straight into a zeroizing secret: no plain `String` copy outlives this block.
        SecretString::from(k)
    };
    let actor = caller.actor();
    let mut c = s
        .store
        .credential(actor, user, id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    if c.status != "pending" {
        return Err(ApiError::conflict(
            "credential_not_pending",
            format!(
                "only a generated, pending credential takes a key id; this one is {}",
                c.status
            ),
        ));
    }
    let mut secret = s
        .store
        .credential_secret(actor, user, id, c.current_generation)
        .await?
        .ok_or_else(|| ApiError::internal("generated credential has no generation"))?;
    let opened = open_secrets(&s.keyring, actor, &secret).await?;
    let plain = PlainSecrets {
        api_key: key,
        api_secret: None,
        passphrase: None,
        private_key: opened.private_key,
    };
    let dek = s
        .keyring
        .dek(actor, user, Some(secret.dek_version as u32))
        .await?;
    seal_into(&mut secret, &dek, &plain);
    c.api_key_hint = hint(&plain.api_key);
    c.updated_at = DbTime::now();
    drop(plain);
    if !s.store.activate_generated(actor, &c, &secret).await? {
        return Err(ApiError::conflict(
            "credential_not_pending",
            "the credential changed meanwhile; it is no longer pending",
        ));
    }
    let mut ev = event("credential", "attach_key", &caller, Some(user), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    let c = s
        .store
        .credential(actor, user, id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    Ok(with_etag(StatusCode::OK, c))
}
