use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_exchanges::keygen::{detect_private_key, PrivateKeyKind};
use keygate_exchanges::{Environment, ExchangeId};
use keygate_policy::{Limits, Scope};
use keygate_storage::{CredentialRecord, DbTime, Json as DbJson, SecretRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::recorder::{event, RequestMeta};
use crate::routes::{page, List, Page};
use crate::secrets::{hint, open_secrets, seal_into, PlainSecrets};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/credentials", post(create).get(list))
        .route(
            "/v1/credentials/{id}",
            get(read).patch(update).delete(remove),
        )
        .route("/v1/credentials/{id}/rotate", post(rotate))
        .route(
            "/v1/credentials/generate",
            post(crate::routes::keygen::generate),
        )
        .route(
            "/v1/credentials/{id}/attach-key",
            post(crate::routes::keygen::attach_key),
        )
        .route("/v1/credentials/{id}/reveal", post(reveal))
        .route("/v1/credentials/{id}/generations", get(generations))
        .route("/v1/credentials/{id}/usage", get(usage))
}

/// A key's use so far today and this month (UTC; the seed's daily and monthly usage
/// counts). Calls are those recorded through keygate (a deleted connection's calls go
/// with it); amounts come from the spend ledger the caps use (kept when a connection is
/// deleted), as decimal USD strings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub calls_today: i64,
    pub denied_today: i64,
    pub calls_this_month: i64,
    pub denied_this_month: i64,
    pub volume_today_usd: String,
    pub withdrawals_today_usd: String,
    pub withdrawals_this_month_usd: String,
}

/// A key's use today and this month.
#[utoipa::path(get, path = "/v1/credentials/{id}/usage", tag = "credentials", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = UsageView), (status = 404, body = crate::error::Problem)))]
pub async fn usage(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<UsageView>> {
    let c = load(&s, &caller, id).await?;
    let u = s
        .store
        .credential_usage(caller.actor(), c.user_id, id, DbTime::now())
        .await?;
    let usd = |micros: i64| {
        rust_decimal::Decimal::new(micros, 6)
            .normalize()
            .to_string()
    };
    Ok(Json(UsageView {
        calls_today: u.calls_today,
        denied_today: u.denied_today,
        calls_this_month: u.calls_this_month,
        denied_this_month: u.denied_this_month,
        volume_today_usd: usd(u.volume_today),
        withdrawals_today_usd: usd(u.withdrawals_today),
        withdrawals_this_month_usd: usd(u.withdrawals_this_month),
    }))
}

/// One generation of a credential's keys (no secret): which one signs, and until when
/// a rotated-away one still does.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GenerationView {
    pub id: Uuid,
    pub generation: i32,
    /// `active` (signs), `rotating` (signs until `grace_period_ends_at`) or `revoked`.
    pub status: String,
    /// The generation this one replaced.
    pub rotated_from: Option<Uuid>,
    pub grace_period_ends_at: Option<DateTime<Utc>>,
    /// Whether it may sign now: the active one, or a rotating one within its grace, of a
    /// key that is itself active (not suspended, expired, revoked or shredded).
    pub signs: bool,
    pub created_at: DateTime<Utc>,
}

/// A credential's key generations, newest first (the seed's rotation columns:
/// `rotated_from_key_id`, `rotation_grace_period_ends_at`, `is_rotation_active`).
#[utoipa::path(get, path = "/v1/credentials/{id}/generations", tag = "credentials", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = List<GenerationView>), (status = 404, body = crate::error::Problem)))]
pub async fn generations(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<List<GenerationView>>> {
    let c = load(&s, &caller, id).await?;
    let now = Utc::now();
    // no generation signs for a key that is itself out of use
    let key_signs = matches!(c.status.as_str(), "active" | "rotating")
        && c.expires_at.is_none_or(|t| t.0 > now);
    let items = s
        .store
        .credential_secrets(caller.actor(), c.user_id, id)
        .await?
        .into_iter()
        .map(|g| GenerationView {
            signs: key_signs
                && match g.status.as_str() {
                    "active" => true,
                    "rotating" => g.grace_period_ends_at.is_some_and(|t| t.0 > now),
                    _ => false,
                },
            id: g.id,
            generation: g.generation,
            status: g.status,
            rotated_from: g.rotated_from,
            grace_period_ends_at: g.grace_period_ends_at.map(|t| t.0),
            created_at: g.created_at.0,
        })
        .collect();
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

/// A credential's metadata. No secret is ever returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    pub id: Uuid,
    pub exchange: String,
    pub label: String,
    pub environment: String,
    /// active | rotating | pending | suspended | revoked | expired | shredded
    pub status: String,
    /// hmac | ed25519 | rsa | ec
    pub key_type: String,
    /// Last four characters of the API key id.
    pub api_key_hint: Option<String>,
    /// Public key of a key pair generated inside keygate.
    pub public_key: Option<String>,
    pub permissions: Vec<String>,
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
    pub generation: i32,
    pub expires_at: Option<DateTime<Utc>>,
    pub usage_count: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub suspended_reason: Option<String>,
    /// Optimistic-concurrency version; send it back as `version` or `If-Match`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CredentialRecord> for CredentialView {
    fn from(c: CredentialRecord) -> Self {
        CredentialView {
            id: c.id,
            exchange: c.exchange,
            label: c.label,
            environment: c.environment,
            status: c.status,
            key_type: c.key_type,
            api_key_hint: c.api_key_hint,
            public_key: c.public_key,
            permissions: c.permissions.0,
            limits: c.limits.0,
            generation: c.current_generation,
            expires_at: c.expires_at.map(|t| t.0),
            usage_count: c.usage_count,
            last_used_at: c.last_used_at.map(|t| t.0),
            suspended_reason: c.suspended_reason,
            version: c.row_version,
            created_at: c.created_at.0,
            updated_at: c.updated_at.0,
        }
    }
}

pub(crate) fn with_etag(status: StatusCode, c: CredentialRecord) -> Response {
    crate::routes::with_etag(status, c.row_version, CredentialView::from(c))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    /// CCXT exchange id: binance, binanceusdm, okx, bybit, kraken, kucoin, bitget, gate, coinbase.
    pub exchange: String,
    pub label: String,
    /// production | testnet (default production).
    #[serde(default)]
    pub environment: Option<String>,
    /// The exchange's API key id (Coinbase: the key name).
    #[schema(value_type = String)]
    pub api_key: SecretString,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub api_secret: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub passphrase: Option<SecretString>,
    /// PEM private key (Binance Ed25519/RSA, Coinbase EC).
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// Subset of read, trade, withdraw, transfer, sub_account (default ["read"]).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub limits: Option<serde_json::Value>,
}

const MAX_SECRET: usize = 8192;

/// A new key generation row with `plain` sealed into it under `dek`.
#[allow(clippy::too_many_arguments)] // the row's identity; a builder would only rename them
pub(crate) fn sealed_generation(
    credential_id: Uuid,
    user_id: Uuid,
    generation: i32,
    rotated_from: Option<Uuid>,
    last_nonce: i64,
    now: DbTime,
    dek: &crate::keyring::DekHandle,
    plain: &PlainSecrets,
) -> SecretRecord {
    let mut secret = SecretRecord {
        id: Uuid::now_v7(),
        credential_id,
        user_id,
        generation,
        dek_version: 0,
        api_key_ct: None,
        api_secret_ct: None,
        passphrase_ct: None,
        private_key_ct: None,
        status: "active".into(),
        rotated_from,
        grace_period_ends_at: None,
        last_nonce,
        created_at: now,
    };
    seal_into(&mut secret, dek, plain);
    secret
}

pub(crate) fn check_label(label: &str, errors: &mut Vec<FieldError>) {
    let n = label.chars().count();
    if n == 0 || n > 100 {
        errors.push(FieldError::new("label", "must be 1 to 100 characters"));
    } else if label.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "label",
            "must not contain control characters",
        ));
    } else if label.trim() != label {
        errors.push(FieldError::new(
            "label",
            "must not start or end with spaces",
        ));
    }
}

fn check_secret(field: &str, v: &Option<SecretString>, errors: &mut Vec<FieldError>) {
    if let Some(s) = v {
        let s = s.expose_secret();
        if s.is_empty() || s.len() > MAX_SECRET {
            errors.push(FieldError::new(
                field,
                format!("must be 1 to {MAX_SECRET} bytes"),
            ));
        } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
            errors.push(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
    }
}

pub(crate) fn parse_permissions(
    p: Option<Vec<String>>,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    let list = p.unwrap_or_else(|| vec!["read".into()]);
    let mut out: Vec<String> = Vec::new();
    for s in list {
        if Scope::ALL.iter().any(|x| x.as_str() == s) {
            if !out.contains(&s) {
                out.push(s);
            }
        } else {
            errors.push(FieldError::new(
                "permissions",
                format!(
                    "unknown permission `{}`; use read, trade, withdraw, transfer or sub_account",
                    s.chars().take(32).collect::<String>()
                ),
            ));
        }
    }
    out.sort();
    out
}

pub(crate) fn parse_limits(
    v: Option<serde_json::Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> serde_json::Value {
    let v = v.unwrap_or_else(|| serde_json::json!({}));
    match serde_json::from_value::<Limits>(v) {
        Ok(l) => {
            if let Err(es) = l.validate() {
                errors.extend(
                    es.into_iter()
                        .map(|e| FieldError::new(format!("{field}.{}", e.field), e.message)),
                );
            }
            serde_json::to_value(&l).unwrap_or_default()
        }
        Err(e) => {
            errors.push(FieldError::new(
                field,
                e.to_string().chars().take(200).collect::<String>(),
            ));
            serde_json::json!({})
        }
    }
}

/// Validates secrets against the exchange's needs and returns the key type.
fn check_key_material(ex: ExchangeId, p: &PlainSecrets, errors: &mut Vec<FieldError>) -> String {
    let k = p.api_key.expose_secret();
    if k.is_empty() || k.len() > 512 || k.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "api_key",
            "must be 1 to 512 printable characters",
        ));
    }
    check_secret("api_secret", &p.api_secret, errors);
    check_secret("passphrase", &p.passphrase, errors);
    check_secret("private_key", &p.private_key, errors);
    let kind = match &p.private_key {
        Some(pk) => match detect_private_key(pk.expose_secret()) {
            Some(k) => Some(k),
            None => {
                errors.push(FieldError::new(
                    "private_key",
                    "not a PEM Ed25519, RSA or EC P-256 private key",
                ));
                None
            }
        },
        None => None,
    };
    match (ex, kind) {
        (ExchangeId::Coinbase, None) if p.private_key.is_none() => errors.push(FieldError::new(
            "private_key",
            "coinbase needs the CDP key's EC private key (PEM)",
        )),
        (ExchangeId::Coinbase, Some(k)) if k != PrivateKeyKind::EcP256 => {
            errors.push(FieldError::new("private_key", "coinbase keys are EC P-256"))
        }
        (ExchangeId::Binance | ExchangeId::Binanceusdm | ExchangeId::Coinbase, _) => {}
        (_, Some(_)) => errors.push(FieldError::new(
            "private_key",
            "this exchange signs with an API secret, not a private key",
        )),
        _ => {}
    }
    if p.api_secret.is_none() && p.private_key.is_none() {
        errors.push(FieldError::new(
            "api_secret",
            "required unless private_key is given",
        ));
    }
    if ex.needs_passphrase() && p.passphrase.is_none() {
        errors.push(FieldError::new(
            "passphrase",
            format!("{ex} keys need their passphrase"),
        ));
    }
    if !ex.needs_passphrase() && p.passphrase.is_some() {
        errors.push(FieldError::new(
            "passphrase",
            format!("{ex} keys have no passphrase"),
        ));
    }
    kind.map(|k| k.as_str().to_string())
        .unwrap_or_else(|| "hmac".into())
}

/// Store an exchange API key. Only metadata comes back.
#[utoipa::path(post, path = "/v1/credentials", tag = "credentials", request_body = CreateCredential,
    security(("bearer" = [])),
    responses((status = 201, body = CredentialView), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<CreateCredential>,
) -> ApiResult<Response> {
    let user = caller.user()?;
    let mut errors = Vec::new();
    let ex = req.exchange.parse::<ExchangeId>().map_err(|_| {
        ApiError::field("exchange", "unknown exchange id; use a CCXT id: binance, binanceusdm, okx, bybit, kraken, kucoin, bitget, gate, coinbase")
    })?;
    let env = match req.environment.as_deref().unwrap_or("production") {
        "production" => Environment::Production,
        "testnet" => Environment::Testnet,
        _ => {
            errors.push(FieldError::new(
                "environment",
                "must be production or testnet",
            ));
            Environment::Production
        }
    };
    if env == Environment::Testnet && !ex.has_testnet() {
        errors.push(FieldError::new(
            "environment",
            format!("{ex} has no testnet"),
        ));
    }
    check_label(&req.label, &mut errors);
    let permissions = parse_permissions(req.permissions, &mut errors);
    let limits = parse_limits(req.limits, "limits", &mut errors);
    let now = DbTime::now();
    if let Some(e) = req.expires_at {
        if e <= now.0 {
            errors.push(FieldError::new("expires_at", "must be in the future"));
        }
        super::check_instant("expires_at", &e, &mut errors);
    }
    let plain = PlainSecrets {
        api_key: req.api_key,
        api_secret: req.api_secret,
        passphrase: req.passphrase,
        private_key: req.private_key,
    };
    let key_type = check_key_material(ex, &plain, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let actor = caller.actor();
    let dek = s.keyring.dek(actor, user, None).await?;
    let id = Uuid::now_v7();
    let secret = sealed_generation(id, user, 1, None, 0, now, &dek, &plain);
    let rec = CredentialRecord {
        id,
        user_id: user,
        exchange: ex.as_str().into(),
        label: req.label,
        environment: env.as_str().into(),
        status: "active".into(),
        key_type,
        api_key_hint: hint(&plain.api_key),
        public_key: None,
        permissions: DbJson(permissions),
        limits: DbJson(limits),
        current_generation: 1,
        expires_at: req.expires_at.map(DbTime::new),
        usage_count: 0,
        last_used_at: None,
        suspended_reason: None,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    drop(plain);
    s.store.create_credential(actor, &rec, &secret).await?;
    let mut ev = event("credential", "create", &caller, Some(user), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::CREATED, rec))
}

/// List your credentials.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", params(Page), security(("bearer" = [])),
    responses((status = 200, body = List<CredentialView>), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<CredentialView>>> {
    let user = caller.user()?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_credentials(caller.actor(), user, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        CredentialView::from,
    )))
}

pub(crate) async fn load(s: &AppState, caller: &Caller, id: Uuid) -> ApiResult<CredentialRecord> {
    let user = caller.user()?;
    s.store
        .credential(caller.actor(), user, id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))
}

/// Read one credential's metadata.
#[utoipa::path(get, path = "/v1/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = CredentialView), (status = 404, body = crate::error::Problem)))]
pub async fn read(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let c = load(&s, &caller, id).await?;
    let mut ev = event("credential", "read", &caller, Some(c.user_id), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::OK, c))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredential {
    pub label: Option<String>,
    pub permissions: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Value>,
    /// `null` clears the expiry.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// `suspended` or `active` (reactivation by the owner).
    pub status: Option<String>,
    /// The `version` you read (or send `If-Match`).
    pub version: Option<i64>,
}

/// Whether `after` lets the key do anything `before` did not: a permission added, limits
/// that are not [`Limits::no_looser_than`] the old ones (unreadable old limits count as
/// none), or a later (or no) expiry.
fn widens(before: &CredentialRecord, after: &CredentialRecord) -> bool {
    let added = after
        .permissions
        .0
        .iter()
        .any(|p| !before.permissions.0.contains(p));
    let expiry = match (&before.expires_at, &after.expires_at) {
        (Some(b), Some(a)) => a.0 > b.0,
        (Some(_), None) => true,
        (None, _) => false,
    };
    added || expiry || limits_widen(&before.limits.0, &after.limits.0)
}

/// Whether stored limits `after` allow anything `before` refused.
pub(crate) fn limits_widen(before: &serde_json::Value, after: &serde_json::Value) -> bool {
    if before == after {
        return false;
    }
    match (
        serde_json::from_value::<Limits>(before.clone()),
        serde_json::from_value::<Limits>(after.clone()),
    ) {
        (Ok(b), Ok(a)) => !a.no_looser_than(&b),
        _ => true,
    }
}

pub(crate) fn expected_version(
    headers: &HeaderMap,
    body: Option<i64>,
    current: i64,
) -> ApiResult<i64> {
    // a header that is there but unreadable is refused, not taken as absent (which would
    // skip the check)
    let from_header = headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map_err(|_| ())?
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<i64>()
                .map_err(|_| ())
        })
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("bad_if_match", "If-Match must be an ETag this API returned")
        })?;
    let expected = from_header.or(body).unwrap_or(current);
    if expected != current {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            "the resource changed since you read it; fetch it again and retry",
        ));
    }
    Ok(expected)
}

/// Edit label, permissions, limits, expiry, or suspend / reactivate.
#[utoipa::path(patch, path = "/v1/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)), request_body = UpdateCredential,
    security(("bearer" = [])),
    responses((status = 200, body = CredentialView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<UpdateCredential>,
) -> ApiResult<Response> {
    let mut c = load(&s, &caller, id).await?;
    let expected = expected_version(&headers, req.version, c.row_version)?;
    let before = c.clone();
    let mut errors = Vec::new();
    if let Some(l) = req.label {
        check_label(&l, &mut errors);
        c.label = l;
    }
    if let Some(p) = req.permissions {
        c.permissions = DbJson(parse_permissions(Some(p), &mut errors));
    }
    if let Some(l) = req.limits {
        c.limits = DbJson(parse_limits(Some(l), "limits", &mut errors));
    }
    if let Some(e) = req.expires_at {
        if e.is_some_and(|e| e <= Utc::now()) {
            errors.push(FieldError::new("expires_at", "must be in the future"));
        }
        if let Some(e) = &e {
            super::check_instant("expires_at", e, &mut errors);
        }
        c.expires_at = e.map(DbTime::new);
        // a key that expired comes back with a later expiry (or none): a widening, so
        // it takes the fresh unlock below
        if c.status == "expired" {
            c.status = "active".into();
        }
    }
    let mut action = "update";
    if let Some(st) = req.status.as_deref() {
        match (st, c.status.as_str()) {
            ("suspended", "active" | "rotating" | "suspended") => {
                c.status = "suspended".into();
                c.suspended_reason = Some("suspended by owner".into());
                action = "suspend";
            }
            ("active", "suspended") => {
                c.status = "active".into();
                c.suspended_reason = None;
                action = "reactivate";
            }
            ("active", "active") => {}
            _ => errors.push(FieldError::new(
                "status",
                format!(
                    "cannot change status from {} to {}",
                    c.status,
                    st.chars().take(20).collect::<String>()
                ),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if before.status == "expired" && c.status == "active" {
        // an expired key back in use: as a reactivation (the owner, fresh unlock)
        action = "reactivate";
    }
    if action == "reactivate" {
        // Only the owner reactivates, with a fresh unlock in password mode (issue 8).
        if caller.service {
            return Err(ApiError::forbidden(
                "owner_required",
                "only the credential's owner can reactivate it",
            ));
        }
        crate::routes::rotation::require_fresh_unlock(
            &s,
            &caller,
            c.user_id,
            "reactivate a credential",
        )
        .await?;
    } else if !caller.service && widens(&before, &c) {
        // A bearer token alone must not lift the policy it is held to: in password mode,
        // widening what the key may do takes the password again (a fresh unlock).
        crate::routes::rotation::require_fresh_unlock(
            &s,
            &caller,
            c.user_id,
            "widen a credential's permissions, limits or expiry",
        )
        .await?;
    }
    c.updated_at = DbTime::now();
    let stored = s
        .store
        .update_credential(caller.actor(), &c, expected)
        .await?;
    let mut ev = event("credential", action, &caller, Some(c.user_id), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::OK, stored))
}

/// Delete a credential (refused while a connection uses it).
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "credentials", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let user = caller.user()?;
    if !s.store.delete_credential(caller.actor(), user, id).await? {
        return Err(ApiError::not_found("credential"));
    }
    let mut ev = event("credential", "delete", &caller, Some(user), &meta);
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCredential {
    #[schema(value_type = String)]
    pub api_key: SecretString,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub api_secret: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub passphrase: Option<SecretString>,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// How long the previous generation keeps signing (0 to 30 days; default 0).
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    pub version: Option<i64>,
}

/// Rotate: store new secrets as the next generation; the previous one keeps signing
/// until the grace period ends.
#[utoipa::path(post, path = "/v1/credentials/{id}/rotate", tag = "credentials", params(("id" = Uuid, Path)), request_body = RotateCredential,
    security(("bearer" = [])),
    responses((status = 200, body = CredentialView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn rotate(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<RotateCredential>,
) -> ApiResult<Response> {
    let mut c = load(&s, &caller, id).await?;
    let expected = expected_version(&headers, req.version, c.row_version)?;
    let ex: ExchangeId = c
        .exchange
        .parse()
        .map_err(|_| ApiError::internal("stored exchange id unknown"))?;
    let mut errors = Vec::new();
    if !matches!(c.status.as_str(), "active" | "rotating" | "pending") {
        return Err(ApiError::conflict(
            "credential_not_rotatable",
            format!("a {} credential cannot be rotated", c.status),
        ));
    }
    let grace = req.grace_period_seconds.unwrap_or(0);
    if !(0..=30 * 86_400).contains(&grace) {
        errors.push(FieldError::new(
            "grace_period_seconds",
            "must be between 0 and 2592000 (30 days)",
        ));
    }
    let plain = PlainSecrets {
        api_key: req.api_key,
        api_secret: req.api_secret,
        passphrase: req.passphrase,
        private_key: req.private_key,
    };
    let key_type = check_key_material(ex, &plain, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let actor = caller.actor();
    let dek = s.keyring.dek(actor, c.user_id, None).await?;
    let now = DbTime::now();
    let prev = s
        .store
        .credential_secret(actor, c.user_id, id, c.current_generation)
        .await?
        .ok_or_else(|| ApiError::internal("current generation missing"))?;
    let secret = sealed_generation(
        id,
        c.user_id,
        c.current_generation + 1,
        Some(prev.id),
        prev.last_nonce,
        now,
        &dek,
        &plain,
    );
    c.api_key_hint = hint(&plain.api_key);
    c.key_type = key_type;
    c.status = "active".into();
    drop(plain);
    let grace_end = DbTime::new(now.0 + chrono::Duration::seconds(grace));
    let stored = s
        .store
        .rotate_credential(actor, &c, expected, &secret, grace_end)
        .await?;
    let mut ev = event("credential", "rotate", &caller, Some(c.user_id), &meta);
    ev.credential_id = Some(id);
    ev.metadata =
        DbJson(serde_json::json!({"generation": secret.generation, "grace_period_seconds": grace}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::OK, stored))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevealedCredential {
    pub id: Uuid,
    pub generation: i32,
    pub api_key: String,
    pub api_secret: Option<String>,
    pub passphrase: Option<String>,
    pub private_key: Option<String>,
}

/// Reveal the raw key (for migrating legacy code). Off unless `KEYGATE_REVEAL_ENABLED`;
/// service role only; needs an unlocked vault in password mode; always audited.
#[utoipa::path(post, path = "/v1/credentials/{id}/reveal", tag = "credentials", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = RevealedCredential), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn reveal(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    if !s.config.reveal_enabled {
        return Err(ApiError::forbidden(
            "reveal_disabled",
            "reveal is disabled on this server (KEYGATE_REVEAL_ENABLED)",
        ));
    }
    let c = load(&s, &caller, id).await?;
    let mut ev = event("credential", "reveal", &caller, Some(c.user_id), &meta);
    ev.credential_id = Some(id);
    ev.risk_score = 50;
    ev.risk_reasons = DbJson(vec!["plaintext secret revealed".into()]);
    if !caller.service {
        ev.success = false;
        ev.reason = Some("not service role".into());
        s.recorder.record(vec![ev], vec![]).await?;
        return Err(ApiError::forbidden(
            "service_role_required",
            "reveal needs a service_role token",
        ));
    }
    let actor = caller.actor();
    let secret = s
        .store
        .credential_secret(actor, c.user_id, id, c.current_generation)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    let plain = match open_secrets(&s.keyring, actor, &secret).await {
        Ok(p) => p,
        Err(e) => {
            ev.success = false;
            ev.reason = Some(e.code().into());
            s.recorder.record(vec![ev], vec![]).await?;
            return Err(e);
        }
    };
    s.recorder.record(vec![ev], vec![]).await?;
    let body = RevealedCredential {
        id,
        generation: secret.generation,
        api_key: plain.api_key.expose_secret().to_string(),
        api_secret: plain
            .api_secret
            .as_ref()
            .map(|v| v.expose_secret().to_string()),
        passphrase: plain
            .passphrase
            .as_ref()
            .map(|v| v.expose_secret().to_string()),
        private_key: plain
            .private_key
            .as_ref()
            .map(|v| v.expose_secret().to_string()),
    };
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
