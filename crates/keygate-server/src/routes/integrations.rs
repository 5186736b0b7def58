//! Per-user integrations (seed `integrations`) and their OAuth tokens (seed
//! `integration_tokens`), sealed with the user's DEK like credentials. The access token is
//! handed only to the owner or the service role, and every hand-out is audited.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{Actor, DbTime, IntegrationRecord, IntegrationTokenRecord, Json as DbJson};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::integrations::{
    open, refresh, seal, RefreshOutcome, F_ACCESS_TOKEN, F_CLIENT_SECRET, F_REFRESH_TOKEN,
};
use crate::recorder::{event, RequestMeta};
use crate::routes::credentials::expected_version;
use crate::routes::{page, with_etag, List, Page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/integrations", post(create).get(list))
        .route(
            "/v1/integrations/{id}",
            get(read).patch(update).delete(remove),
        )
        .route("/v1/integrations/{id}/tokens", put(put_tokens))
        .route("/v1/integrations/{id}/token", get(token))
        .route("/v1/integrations/{id}/refresh", post(refresh_now))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub token_type: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub has_refresh_token: bool,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub refresh_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub id: Uuid,
    pub provider: String,
    pub name: String,
    pub client_id: String,
    pub has_client_secret: bool,
    pub token_url: String,
    pub scopes: Vec<String>,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `false` while paused (status `disabled`).
    pub enabled: bool,
    /// active | needs_reconsent | error | disabled
    pub status: String,
    pub last_error: Option<String>,
    pub token: Option<TokenInfo>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn view(i: IntegrationRecord, t: Option<IntegrationTokenRecord>) -> IntegrationView {
    IntegrationView {
        id: i.id,
        provider: i.provider,
        name: i.name,
        client_id: i.client_id,
        has_client_secret: i.client_secret_ct.is_some(),
        token_url: i.token_url,
        scopes: i.scopes.0,
        config: i.config.0,
        enabled: i.status != "disabled",
        status: i.status,
        last_error: i.last_error,
        token: t.map(|t| TokenInfo {
            token_type: t.token_type,
            scopes: t.scopes.0,
            expires_at: t.expires_at.map(|x| x.0),
            has_refresh_token: t.refresh_token_ct.is_some(),
            refreshed_at: t.refreshed_at.map(|x| x.0),
            refresh_attempts: t.refresh_attempts,
            next_attempt_at: t.next_attempt_at.map(|x| x.0),
            last_error: t.last_error,
        }),
        version: i.row_version,
        created_at: i.created_at.0,
        updated_at: i.updated_at.0,
    }
}

fn check_text(field: &str, v: &str, max: usize, errors: &mut Vec<FieldError>) {
    let n = v.chars().count();
    if n == 0 || n > max || v.chars().any(char::is_control) || v.trim() != v {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {max} printable characters without surrounding spaces"),
        ));
    }
}

fn check_secret(field: &str, v: &SecretString, errors: &mut Vec<FieldError>) {
    let v = v.expose_secret();
    if v.is_empty() || v.len() > 8192 || v.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must be 1 to 8192 printable bytes"));
    }
}

fn check_scopes(v: &[String], errors: &mut Vec<FieldError>) {
    if v.len() > 100
        || v.iter().any(|s| {
            s.is_empty() || s.len() > 200 || s.chars().any(|c| c.is_whitespace() || c.is_control())
        })
    {
        errors.push(FieldError::new(
            "scopes",
            "up to 100 scopes, each 1 to 200 characters without spaces",
        ));
    }
}

/// 422 for a PATCH that would move `token_url`.
fn token_url_immutable() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "token_url_immutable",
        "token_url cannot be changed: the stored refresh token and client secret are sent to it; \
         create a new integration for another token endpoint (and delete this one)",
    )
}

fn check_token_url(s: &AppState, u: &str, errors: &mut Vec<FieldError>) {
    let allowed = &s.config.allowed_private_hosts;
    if let Err(e) = crate::outbound::check_user_url(allowed, u)
        .and_then(|()| crate::outbound::check_token_scheme(allowed, u))
    {
        errors.push(FieldError::new("token_url", e));
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokensBody {
    #[schema(value_type = String)]
    pub access_token: SecretString,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Default `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    pub provider: String,
    pub name: String,
    pub client_id: String,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The provider's OAuth token endpoint (http or https).
    pub token_url: String,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Tokens from the initial consent, if already obtained.
    #[serde(default)]
    pub tokens: Option<TokensBody>,
}

fn check_tokens(t: &TokensBody, errors: &mut Vec<FieldError>) {
    check_secret("tokens.access_token", &t.access_token, errors);
    if let Some(r) = &t.refresh_token {
        check_secret("tokens.refresh_token", r, errors);
    }
    if let Some(s) = &t.scopes {
        check_scopes(s, errors);
    }
    if let Some(tt) = &t.token_type {
        check_text("tokens.token_type", tt, 32, errors);
    }
    if let Some(e) = &t.expires_at {
        super::check_instant("tokens.expires_at", e, errors);
    }
}

async fn seal_tokens(
    s: &AppState,
    actor: Actor,
    user: Uuid,
    id: Uuid,
    t: &TokensBody,
    created_at: DbTime,
) -> ApiResult<IntegrationTokenRecord> {
    let dek = s.keyring.dek(actor, user, None).await?;
    let now = DbTime::now();
    Ok(IntegrationTokenRecord {
        integration_id: id,
        user_id: user,
        access_token_ct: seal(
            &dek,
            user,
            id,
            F_ACCESS_TOKEN,
            t.access_token.expose_secret(),
        ),
        refresh_token_ct: t
            .refresh_token
            .as_ref()
            .map(|r| seal(&dek, user, id, F_REFRESH_TOKEN, r.expose_secret())),
        token_type: t.token_type.clone().unwrap_or_else(|| "Bearer".into()),
        scopes: DbJson(t.scopes.clone().unwrap_or_default()),
        expires_at: t.expires_at.map(DbTime::new),
        dek_version: dek.version as i32,
        refreshed_at: None,
        refresh_attempts: 0,
        next_attempt_at: None,
        last_error: None,
        created_at,
        updated_at: now,
    })
}

/// Add an integration (OAuth client config, optionally its first tokens).
#[utoipa::path(post, path = "/v1/integrations", tag = "integrations", request_body = CreateIntegration, security(("bearer" = [])),
    responses((status = 201, body = IntegrationView), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<CreateIntegration>,
) -> ApiResult<Response> {
    let user = caller.user()?;
    let actor = caller.actor();
    let mut errors = Vec::new();
    check_text("provider", &req.provider, 64, &mut errors);
    check_text("name", &req.name, 100, &mut errors);
    check_text("client_id", &req.client_id, 512, &mut errors);
    if let Some(cs) = &req.client_secret {
        check_secret("client_secret", cs, &mut errors);
    }
    check_token_url(&s, &req.token_url, &mut errors);
    let scopes = req.scopes.unwrap_or_default();
    check_scopes(&scopes, &mut errors);
    let config = req.config.unwrap_or_else(|| serde_json::json!({}));
    if !config.is_object() || config.to_string().len() > 16 * 1024 {
        errors.push(FieldError::new(
            "config",
            "must be a JSON object under 16 KiB",
        ));
    }
    super::check_json_text("config", &config, &mut errors);
    if let Some(t) = &req.tokens {
        check_tokens(t, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let dek = s.keyring.dek(actor, user, None).await?;
    let now = DbTime::now();
    let id = Uuid::now_v7();
    let rec = IntegrationRecord {
        id,
        user_id: user,
        provider: req.provider,
        name: req.name,
        client_id: req.client_id,
        client_secret_ct: req
            .client_secret
            .as_ref()
            .map(|c| seal(&dek, user, id, F_CLIENT_SECRET, c.expose_secret())),
        token_url: req.token_url,
        scopes: DbJson(scopes),
        config: DbJson(config),
        status: "active".into(),
        last_error: None,
        dek_version: dek.version as i32,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    let tok = match &req.tokens {
        Some(t) => Some(seal_tokens(&s, actor, user, id, t, now).await?),
        None => None,
    };
    // the integration and its first tokens together: a failure leaves neither
    s.store
        .create_integration(actor, &rec, tok.as_ref())
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict("name") => {
                ApiError::field("name", "an integration with this name already exists")
            }
            e => e.into(),
        })?;
    let mut ev = event("integration", "create", &caller, Some(user), &meta);
    ev.metadata = DbJson(serde_json::json!({"integration_id": id, "provider": rec.provider}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(
        StatusCode::CREATED,
        rec.row_version,
        view(rec, tok),
    ))
}

/// List your integrations.
#[utoipa::path(get, path = "/v1/integrations", tag = "integrations", params(Page), security(("bearer" = [])),
    responses((status = 200, body = List<IntegrationView>)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<IntegrationView>>> {
    let user = caller.user()?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_integrations(caller.actor(), user, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        |r| view(r, None),
    )))
}

/// The integration `id`: the caller's own, or any user's for the service role. Whatever
/// is then sealed, read or written for it is the *owner's* (`i.user_id`): a service token
/// carries some `sub` of its own, and sealing with that would bind the ciphertexts to the
/// wrong user and DEK, and clobber the owner's tokens with ones the owner cannot open.
async fn load(s: &AppState, caller: &Caller, id: Uuid) -> ApiResult<IntegrationRecord> {
    let found = if caller.service {
        s.store.integration_by_id(id).await?
    } else {
        s.store
            .integration(caller.actor(), caller.user()?, id)
            .await?
    };
    found.ok_or_else(|| ApiError::not_found("integration"))
}

/// One integration with its token metadata (never the tokens).
#[utoipa::path(get, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem)))]
pub async fn read(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let i = load(&s, &caller, id).await?;
    let t = s
        .store
        .integration_token(caller.actor(), i.user_id, id)
        .await?;
    Ok(with_etag(StatusCode::OK, i.row_version, view(i, t)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegration {
    pub name: Option<String>,
    pub client_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    /// Accepted only when equal to the stored one: the refresh token and client secret are
    /// sent to this URL, so it is fixed when the integration is created (a change is
    /// refused with 422 `token_url_immutable`; create a new integration instead).
    pub token_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `false` pauses it (status `disabled`): its tokens are neither refreshed nor handed
    /// out (409 `integration_disabled`) until it is enabled again.
    pub enabled: Option<bool>,
    pub version: Option<i64>,
}

/// Edit an integration's configuration (status returns to `active`, unless it is or
/// becomes disabled: `enabled`). `token_url` cannot change (422 `token_url_immutable`).
#[utoipa::path(patch, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)), request_body = UpdateIntegration, security(("bearer" = [])),
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<UpdateIntegration>,
) -> ApiResult<Response> {
    let actor = caller.actor();
    let mut i = load(&s, &caller, id).await?;
    let owner = i.user_id;
    let expected = expected_version(&headers, req.version, i.row_version)?;
    // Refresh posts the stored refresh token and client secret to `token_url`: whoever
    // could point it elsewhere (a leaked user or service token) could collect both, which
    // are worth more than the token that edits. So it is fixed at creation; sending the
    // same value back (a client that PATCHes the whole object) is fine.
    if req.token_url.as_ref().is_some_and(|u| *u != i.token_url) {
        return Err(token_url_immutable());
    }
    let mut errors = Vec::new();
    if let Some(n) = req.name {
        check_text("name", &n, 100, &mut errors);
        i.name = n;
    }
    if let Some(c) = req.client_id {
        check_text("client_id", &c, 512, &mut errors);
        i.client_id = c;
    }
    if let Some(sc) = req.scopes {
        check_scopes(&sc, &mut errors);
        i.scopes = DbJson(sc);
    }
    if let Some(c) = req.config {
        if !c.is_object() || c.to_string().len() > 16 * 1024 {
            errors.push(FieldError::new(
                "config",
                "must be a JSON object under 16 KiB",
            ));
        }
        super::check_json_text("config", &c, &mut errors);
        i.config = DbJson(c);
    }
    if let Some(cs) = &req.client_secret {
        check_secret("client_secret", cs, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some(cs) = &req.client_secret {
        let dek = s.keyring.dek(actor, owner, None).await?;
        i.client_secret_ct = Some(seal(&dek, owner, id, F_CLIENT_SECRET, cs.expose_secret()));
        i.dek_version = dek.version as i32;
    }
    let disabled = match req.enabled {
        Some(enabled) => !enabled,
        None => i.status == "disabled",
    };
    if disabled {
        i.status = "disabled".into();
    } else {
        i.status = "active".into();
        i.last_error = None;
    }
    i.updated_at = DbTime::now();
    let stored = s
        .store
        .update_integration(actor, &i, Some(expected))
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict("name") => {
                ApiError::field("name", "an integration with this name already exists")
            }
            e => e.into(),
        })?;
    let action = match req.enabled {
        Some(false) => "disable",
        Some(true) => "enable",
        None => "update",
    };
    let mut ev = event("integration", action, &caller, Some(owner), &meta);
    ev.metadata = DbJson(serde_json::json!({"integration_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    let t = s.store.integration_token(actor, owner, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        stored.row_version,
        view(stored, t),
    ))
}

/// Delete an integration and its tokens.
#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let owner = load(&s, &caller, id).await?.user_id;
    if !s
        .store
        .delete_integration(caller.actor(), owner, id)
        .await?
    {
        return Err(ApiError::not_found("integration"));
    }
    let mut ev = event("integration", "delete", &caller, Some(owner), &meta);
    ev.metadata = DbJson(serde_json::json!({"integration_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Store tokens (after a new consent): replaces the previous ones, status back to `active`.
/// 409 `refresh_in_progress` while a refresh of the integration runs (try again).
#[utoipa::path(put, path = "/v1/integrations/{id}/tokens", tag = "integrations", params(("id" = Uuid, Path)), request_body = TokensBody, security(("bearer" = [])),
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn put_tokens(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<TokensBody>,
) -> ApiResult<Response> {
    let actor = caller.actor();
    let mut i = load(&s, &caller, id).await?;
    let owner = i.user_id;
    let mut errors = Vec::new();
    check_tokens(&req, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // under the refresh's lease: a refresh under way with the old refresh token would
    // otherwise overwrite these tokens, or mark them needing consent when the provider
    // refuses the old one (409 `refresh_in_progress` while it runs; try again)
    let lease = format!("integration_refresh:{id}");
    let holder = Uuid::now_v7().to_string();
    if !s
        .store
        .try_job_lease(
            &lease,
            &holder,
            DbTime::now(),
            crate::integrations::lease_until(&s),
        )
        .await?
    {
        return Err(crate::integrations::refresh_in_progress());
    }
    let stored = async {
        // read again under the lease: a refresh that ended just before it may have
        // marked the integration as needing consent, which these tokens end
        i = load(&s, &caller, id).await?;
        let prev = s.store.integration_token(actor, owner, id).await?;
        let t = seal_tokens(
            &s,
            actor,
            owner,
            id,
            &req,
            prev.map(|p| p.created_at).unwrap_or_else(DbTime::now),
        )
        .await?;
        s.store.put_integration_token(actor, &t).await?;
        // new tokens end a refusal or an error; a paused integration stays paused
        if i.status != "active" && i.status != "disabled" {
            i = s
                .store
                .set_integration_status(actor, owner, id, "active", None, DbTime::now())
                .await?;
        }
        Ok::<_, ApiError>(t)
    }
    .await;
    if let Err(e) = s.store.release_job_lease(&lease, &holder).await {
        tracing::warn!(integration = %id, error = %e, "the refresh lease could not be given back; it expires by itself");
    }
    let t = stored?;
    let mut ev = event("integration", "tokens_set", &caller, Some(owner), &meta);
    ev.metadata = DbJson(serde_json::json!({"integration_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::OK, i.row_version, view(i, Some(t))))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    pub integration_id: Uuid,
    pub access_token: String,
    pub token_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

/// The access token, for its owner or the service role only; audited.
#[utoipa::path(get, path = "/v1/integrations/{id}/token", tag = "integrations", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = AccessToken), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn token(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let i = load(&s, &caller, id).await?;
    let actor = caller.actor();
    let t = s
        .store
        .integration_token(actor, i.user_id, id)
        .await?
        .ok_or_else(|| ApiError::conflict("no_token", "this integration has no token yet"))?;
    let mut ev = event("integration", "token_read", &caller, Some(i.user_id), &meta);
    ev.metadata = DbJson(serde_json::json!({"integration_id": id}));
    if i.status == "disabled" {
        ev.success = false;
        ev.reason = Some("disabled".into());
        s.recorder.record(vec![ev], vec![]).await?;
        return Err(crate::integrations::integration_disabled());
    }
    if i.status == "needs_reconsent" {
        ev.success = false;
        ev.reason = Some("needs_reconsent".into());
        s.recorder.record(vec![ev], vec![]).await?;
        return Err(ApiError::conflict(
            "integration_needs_reconsent",
            "the provider refused the refresh token; the user must consent again",
        ));
    }
    let dek = s
        .keyring
        .dek(actor, i.user_id, Some(t.dek_version as u32))
        .await?;
    let access = open(&dek, i.user_id, id, F_ACCESS_TOKEN, &t.access_token_ct)?;
    s.recorder.record(vec![ev], vec![]).await?;
    let mut r = Json(AccessToken {
        integration_id: id,
        access_token: access.expose_secret().to_string(),
        token_type: t.token_type,
        expires_at: t.expires_at.map(|x| x.0),
        scopes: t.scopes.0,
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefreshResult {
    /// refreshed | needs_reconsent | retry_later
    pub outcome: String,
    pub detail: Option<String>,
    pub integration: IntegrationView,
}

/// Refresh the tokens now (owner or service role).
#[utoipa::path(post, path = "/v1/integrations/{id}/refresh", tag = "integrations", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = RefreshResult), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn refresh_now(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<RefreshResult>> {
    let i = load(&s, &caller, id).await?;
    if i.status == "disabled" {
        return Err(crate::integrations::integration_disabled());
    }
    if i.status == "needs_reconsent" {
        // the provider refused this refresh token for good: asking again only repeats the
        // refusal (and its notifications); new tokens come with PUT .../tokens
        return Err(ApiError::conflict(
            "integration_needs_reconsent",
            "the provider refused the refresh token; store new tokens after the user consents again",
        ));
    }
    let actor = caller.actor();
    let t = s
        .store
        .integration_token(actor, i.user_id, id)
        .await?
        .ok_or_else(|| ApiError::conflict("no_token", "this integration has no token yet"))?;
    // in a task of its own: a client that hangs up must not cancel it between the
    // provider's answer (which may rotate the refresh token) and storing the new tokens
    let out = {
        let (s, i) = (s.clone(), i.clone());
        tokio::spawn(async move { refresh(&s, actor, &i, &t, DbTime::now()).await })
            .await
            .map_err(|_| ApiError::internal("the refresh failed"))??
    };
    let (outcome, detail) = match out {
        RefreshOutcome::Refreshed => ("refreshed", None),
        RefreshOutcome::NeedsReconsent => ("needs_reconsent", None),
        RefreshOutcome::RetryLater(why) => ("retry_later", Some(why)),
    };
    let i = load(&s, &caller, id).await?;
    let t = s.store.integration_token(actor, i.user_id, id).await?;
    Ok(Json(RefreshResult {
        outcome: outcome.into(),
        detail,
        integration: view(i, t),
    }))
}
