//! Site keys (seed `site_api_keys`): platform-wide provider keys (e.g. AI providers),
//! admin only; every other caller gets 404 so the routes cannot be probed. The value is
//! sealed with the platform's site key (derived from the master key), shown never again
//! after creation except through `use`, which is for the service role only, counted and
//! audited.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use keygate_storage::{Actor, DbTime, SiteKeyRecord};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::recorder::{event, RequestMeta};
use crate::routes::credentials::expected_version;
use crate::routes::{page, with_etag, List, Page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/site-keys", post(create).get(list))
        .route("/v1/site-keys/{id}", get(read).patch(update).delete(remove))
        .route("/v1/site-keys/{id}/use", post(use_key))
        .route(
            "/v1/site-keys/providers/{provider}/use",
            post(use_provider_key),
        )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteKeyView {
    pub id: Uuid,
    pub name: String,
    pub provider: String,
    /// The first characters of the key.
    pub key_prefix: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub usage_count: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub rotation_interval_days: Option<i32>,
    pub next_rotation_at: Option<DateTime<Utc>>,
    /// The admin who added it.
    pub created_by: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SiteKeyRecord> for SiteKeyView {
    fn from(k: SiteKeyRecord) -> Self {
        SiteKeyView {
            id: k.id,
            name: k.name,
            provider: k.provider,
            key_prefix: k.key_prefix,
            description: k.description,
            is_active: k.is_active,
            usage_count: k.usage_count,
            last_used_at: k.last_used_at.map(|t| t.0),
            rotation_interval_days: k.rotation_interval_days,
            next_rotation_at: k.next_rotation_at.map(|t| t.0),
            created_by: k.created_by,
            version: k.row_version,
            created_at: k.created_at.0,
            updated_at: k.updated_at.0,
        }
    }
}

/// Admins only; anyone else sees nothing (404).
fn admin(caller: &Caller) -> ApiResult<Actor> {
    if caller.admin && !caller.service {
        Ok(caller.actor())
    } else {
        Err(ApiError::not_found("resource"))
    }
}

/// Up to 6 leading characters, fewer for short keys, so the prefix never gives most of it away.
fn prefix(v: &str) -> String {
    let n = v.chars().count();
    let keep = (n / 4).min(6);
    let p: String = v.chars().take(keep).collect();
    format!("{p}…")
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

fn check_value(v: &SecretString, errors: &mut Vec<FieldError>) {
    let v = v.expose_secret();
    if v.is_empty() || v.len() > 8192 || v.chars().any(|c| c.is_control()) {
        errors.push(FieldError::new(
            "value",
            "must be 1 to 8192 printable bytes",
        ));
    }
}

fn check_interval(v: Option<i32>, errors: &mut Vec<FieldError>) {
    if v.is_some_and(|d| !(1..=3650).contains(&d)) {
        errors.push(FieldError::new(
            "rotation_interval_days",
            "must be between 1 and 3650",
        ));
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteKey {
    pub name: String,
    /// e.g. openai, anthropic, sendgrid.
    pub provider: String,
    #[schema(value_type = String)]
    pub value: SecretString,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub rotation_interval_days: Option<i32>,
}

/// Admin: store a platform provider key.
#[utoipa::path(post, path = "/v1/site-keys", tag = "site-keys", request_body = CreateSiteKey, security(("bearer" = [])),
    responses((status = 201, body = SiteKeyView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<CreateSiteKey>,
) -> ApiResult<Response> {
    let actor = admin(&caller)?;
    let mut errors = Vec::new();
    check_text("name", &req.name, 100, &mut errors);
    check_text("provider", &req.provider, 64, &mut errors);
    check_value(&req.value, &mut errors);
    check_interval(req.rotation_interval_days, &mut errors);
    if let Some(d) = &req.description {
        super::check_free_text("description", d, 500, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = DbTime::now();
    let id = Uuid::now_v7();
    let rec = SiteKeyRecord {
        id,
        name: req.name,
        provider: req.provider,
        key_prefix: prefix(req.value.expose_secret()),
        value_ct: s.platform.seal_site_value(id, req.value.expose_secret()),
        description: req.description,
        is_active: true,
        usage_count: 0,
        last_used_at: None,
        rotation_interval_days: req.rotation_interval_days,
        next_rotation_at: req
            .rotation_interval_days
            .map(|d| DbTime::new(now.0 + Duration::days(d as i64))),
        created_by: caller.user_id,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    drop(req.value);
    s.store
        .create_site_key(actor, &rec)
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict(_) => {
                ApiError::field("name", "a site key with this name already exists")
            }
            e => e.into(),
        })?;
    let mut ev = event("site_key", "create", &caller, None, &meta);
    ev.metadata =
        keygate_storage::Json(serde_json::json!({"site_key_id": id, "provider": rec.provider}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(
        StatusCode::CREATED,
        rec.row_version,
        SiteKeyView::from(rec),
    ))
}

/// Admin: list site keys.
#[utoipa::path(get, path = "/v1/site-keys", tag = "site-keys", params(Page), security(("bearer" = [])),
    responses((status = 200, body = List<SiteKeyView>), (status = 404, body = crate::error::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<SiteKeyView>>> {
    let actor = admin(&caller)?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_site_keys(actor, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        SiteKeyView::from,
    )))
}

async fn load(s: &AppState, actor: Actor, id: Uuid) -> ApiResult<SiteKeyRecord> {
    s.store
        .site_key(actor, id)
        .await?
        .ok_or_else(|| ApiError::not_found("site key"))
}

/// Admin: one site key (never its value).
#[utoipa::path(get, path = "/v1/site-keys/{id}", tag = "site-keys", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = SiteKeyView), (status = 404, body = crate::error::Problem)))]
pub async fn read(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let actor = admin(&caller)?;
    let k = load(&s, actor, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        k.row_version,
        SiteKeyView::from(k),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSiteKey {
    pub name: Option<String>,
    pub provider: Option<String>,
    /// A new value (rotation): resets the usage clock's rotation date.
    #[schema(value_type = Option<String>)]
    pub value: Option<SecretString>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub is_active: Option<bool>,
    /// `null` clears it, with the rotation date: no more reminders.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<i32>)]
    pub rotation_interval_days: Option<Option<i32>>,
    /// `null` clears it (no reminders until a rotation sets one from the interval).
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub next_rotation_at: Option<Option<DateTime<Utc>>>,
    pub version: Option<i64>,
}

/// Admin: edit or rotate a site key.
#[utoipa::path(patch, path = "/v1/site-keys/{id}", tag = "site-keys", params(("id" = Uuid, Path)), request_body = UpdateSiteKey, security(("bearer" = [])),
    responses((status = 200, body = SiteKeyView), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<UpdateSiteKey>,
) -> ApiResult<Response> {
    let actor = admin(&caller)?;
    let mut k = load(&s, actor, id).await?;
    let expected = expected_version(&headers, req.version, k.row_version)?;
    let mut errors = Vec::new();
    let now = DbTime::now();
    if let Some(n) = req.name {
        check_text("name", &n, 100, &mut errors);
        k.name = n;
    }
    if let Some(p) = req.provider {
        check_text("provider", &p, 64, &mut errors);
        k.provider = p;
    }
    if let Some(d) = req.description {
        if let Some(d) = &d {
            super::check_free_text("description", d, 500, &mut errors);
        }
        k.description = d;
    }
    if let Some(a) = req.is_active {
        k.is_active = a;
    }
    if let Some(days) = req.rotation_interval_days {
        check_interval(days, &mut errors);
        k.rotation_interval_days = days;
        if days.is_none() {
            k.next_rotation_at = None;
        }
    }
    if let Some(Some(t)) = &req.next_rotation_at {
        super::check_instant("next_rotation_at", t, &mut errors);
    }
    // the dates below add the interval: only a valid one (an overflow would panic)
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let rotated = req.value.is_some();
    if let Some(v) = &req.value {
        check_value(v, &mut errors);
        k.key_prefix = prefix(v.expose_secret());
        k.value_ct = s.platform.seal_site_value(id, v.expose_secret());
        k.next_rotation_at = k
            .rotation_interval_days
            .map(|d| DbTime::new(now.0 + Duration::days(d as i64)));
    }
    if let Some(t) = req.next_rotation_at {
        k.next_rotation_at = t.map(DbTime::new);
    } else if req.rotation_interval_days.is_some() && !rotated {
        k.next_rotation_at = k
            .rotation_interval_days
            .map(|d| DbTime::new(now.0 + Duration::days(d as i64)));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    k.updated_at = now;
    let stored = s
        .store
        .update_site_key(actor, &k, expected)
        .await
        .map_err(|e| match e {
            keygate_storage::StorageError::Conflict(_) => {
                ApiError::field("name", "a site key with this name already exists")
            }
            e => e.into(),
        })?;
    let action = if rotated { "rotate" } else { "update" };
    let mut ev = event("site_key", action, &caller, None, &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({"site_key_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(
        StatusCode::OK,
        stored.row_version,
        SiteKeyView::from(stored),
    ))
}

/// Admin: delete a site key.
#[utoipa::path(delete, path = "/v1/site-keys/{id}", tag = "site-keys", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let actor = admin(&caller)?;
    if !s.store.delete_site_key(actor, id).await? {
        return Err(ApiError::not_found("site key"));
    }
    let mut ev = event("site_key", "delete", &caller, None, &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({"site_key_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SiteKeyValue {
    pub id: Uuid,
    pub provider: String,
    pub value: String,
}

/// Service role: use a site key (returns its value; counted and audited). Admins get 403,
/// everyone else 404.
#[utoipa::path(post, path = "/v1/site-keys/{id}/use", tag = "site-keys", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = SiteKeyValue), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn use_key(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    service_only(&caller)?;
    use_it(&s, &caller, &meta, id).await
}

/// Site key values go to the service role only (an admin gets 403, anyone else 404).
fn service_only(caller: &Caller) -> ApiResult<()> {
    if !caller.service {
        if caller.admin {
            return Err(ApiError::forbidden(
                "service_role_required",
                "site key values are handed to the service role only",
            ));
        }
        return Err(ApiError::not_found("resource"));
    }
    Ok(())
}

/// Service role: use the active key of a provider (`openai`, any case), counted and
/// audited like `POST /v1/site-keys/{id}/use`. 404 when it has none; 409
/// `site_key_ambiguous` when it has more than one active key (deactivate all but one, or
/// use the key by id).
#[utoipa::path(post, path = "/v1/site-keys/providers/{provider}/use", tag = "site-keys", params(("provider" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SiteKeyValue), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn use_provider_key(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(provider): AppPath<String>,
) -> ApiResult<Response> {
    service_only(&caller)?;
    if provider.is_empty()
        || provider.chars().count() > 64
        || provider.chars().any(char::is_control)
    {
        return Err(ApiError::not_found("site key"));
    }
    match s.store.active_site_keys_of(caller.actor(), &provider).await?[..] {
        [id] => use_it(&s, &caller, &meta, id).await,
        [] => Err(ApiError::not_found("site key")),
        _ => Err(ApiError::conflict(
            "site_key_ambiguous",
            "this provider has more than one active site key: deactivate all but one, or use one by id",
        )),
    }
}

async fn use_it(
    s: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: Uuid,
) -> ApiResult<Response> {
    let k = s
        .store
        .use_site_key(caller.actor(), id, DbTime::now())
        .await?
        .ok_or_else(|| ApiError::not_found("site key"))?;
    let value = s.platform.open_site_value(k.id, &k.value_ct)?;
    let mut ev = event("site_key", "use", caller, None, meta);
    ev.metadata =
        keygate_storage::Json(serde_json::json!({"site_key_id": id, "usage_count": k.usage_count}));
    s.recorder.record(vec![ev], vec![]).await?;
    let mut r = Json(SiteKeyValue {
        id: k.id,
        provider: k.provider,
        value: value.expose_secret().to_string(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
