//! Webhook endpoints: per user, or platform-wide (`"platform": true`, admins only). The
//! signing secret is generated here, sealed at rest, and shown once in the create response.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{DbTime, DeliveryRecord, Json as DbJson, WebhookRecord};
use rand::RngCore;
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
        .route("/v1/webhooks", get(list).post(create))
        .route("/v1/webhooks/{id}", get(read).patch(update).delete(remove))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/v1/webhooks/{id}/test", axum::routing::post(send_test))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    /// True for a platform endpoint (receives every user's events).
    pub platform: bool,
    pub url: String,
    pub description: Option<String>,
    /// Subscribed event types; empty = all.
    pub events: Vec<String>,
    pub enabled: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret: only in the create response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<WebhookRecord> for WebhookView {
    fn from(w: WebhookRecord) -> Self {
        WebhookView {
            id: w.id,
            platform: w.user_id.is_none(),
            url: w.url,
            description: w.description,
            events: w.events.0,
            enabled: w.is_enabled,
            version: w.row_version,
            created_at: w.created_at.0,
            updated_at: w.updated_at.0,
            secret: None,
        }
    }
}

fn check_events(v: &[String], errors: &mut Vec<FieldError>) {
    for e in v {
        if !crate::webhooks::EVENT_TYPES.contains(&e.as_str()) {
            errors.push(FieldError::new(
                "events",
                format!(
                    "unknown event type `{}`; use {}",
                    e.chars().take(40).collect::<String>(),
                    crate::webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
}

fn check_description(d: &Option<String>, errors: &mut Vec<FieldError>) {
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > 500 || d.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "description",
            "at most 500 printable characters",
        ));
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http or https URL.
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Admins: a platform endpoint receiving every user's events.
    #[serde(default)]
    pub platform: bool,
}

/// Who owns the endpoint being addressed: the caller, or the platform (admins).
fn owner(caller: &Caller, platform: bool) -> ApiResult<Option<Uuid>> {
    if platform {
        if caller.admin && !caller.service {
            Ok(None)
        } else {
            Err(ApiError::not_found("resource"))
        }
    } else {
        Ok(Some(caller.user()?))
    }
}

/// Register a webhook endpoint. The response carries the signing secret once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook, security(("bearer" = [])),
    responses((status = 201, body = WebhookView), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<CreateWebhook>,
) -> ApiResult<Response> {
    let owner = owner(&caller, req.platform)?;
    let mut errors = Vec::new();
    if let Err(e) = crate::outbound::check_user_url(&s.config.allowed_private_hosts, &req.url) {
        errors.push(FieldError::new("url", e));
    }
    let events = req.events.unwrap_or_default();
    check_events(&events, &mut errors);
    check_description(&req.description, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = format!("whsec_{}", hex::encode(raw));
    let id = Uuid::now_v7();
    let now = DbTime::now();
    let rec = WebhookRecord {
        id,
        user_id: owner,
        url: req.url,
        description: req.description,
        events: DbJson(events),
        secret_ct: s.platform.seal_webhook_secret(owner, id, &secret),
        is_enabled: true,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    s.store.create_webhook(caller.actor(), &rec).await?;
    let mut ev = event("webhook", "create", &caller, owner, &meta);
    ev.metadata = DbJson(serde_json::json!({"webhook_id": id, "platform": owner.is_none()}));
    s.recorder.record(vec![ev], vec![]).await?;
    let mut v = WebhookView::from(rec);
    v.secret = Some(secret);
    Ok(with_etag(StatusCode::CREATED, v.version, v))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WebhookListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Admins: list platform endpoints instead of your own.
    #[serde(default)]
    pub platform: bool,
}

/// List your webhook endpoints (or, for admins with `platform=true`, the platform's).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(WebhookListQuery), security(("bearer" = [])),
    responses((status = 200, body = List<WebhookView>)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<WebhookListQuery>,
) -> ApiResult<Json<List<WebhookView>>> {
    let owner = owner(&caller, q.platform)?;
    let p = Page {
        limit: q.limit,
        cursor: q.cursor,
    };
    let limit = p.limit()?;
    let rows = s
        .store
        .list_webhooks(caller.actor(), owner, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        WebhookView::from,
    )))
}

/// The caller's endpoint, or (admins) a platform endpoint.
async fn load(s: &AppState, caller: &Caller, id: Uuid) -> ApiResult<WebhookRecord> {
    if let Some(u) = caller.user_id.filter(|_| !caller.service) {
        if let Some(w) = s.store.webhook(caller.actor(), Some(u), id).await? {
            return Ok(w);
        }
    }
    if caller.admin && !caller.service {
        if let Some(w) = s.store.webhook(caller.actor(), None, id).await? {
            return Ok(w);
        }
    }
    Err(ApiError::not_found("webhook"))
}

/// One webhook endpoint (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = WebhookView), (status = 404, body = crate::error::Problem)))]
pub async fn read(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    let w = load(&s, &caller, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        w.row_version,
        WebhookView::from(w),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub version: Option<i64>,
}

/// Edit a webhook endpoint.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = UpdateWebhook, security(("bearer" = [])),
    responses((status = 200, body = WebhookView), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<UpdateWebhook>,
) -> ApiResult<Response> {
    let mut w = load(&s, &caller, id).await?;
    let expected = expected_version(&headers, req.version, w.row_version)?;
    let mut errors = Vec::new();
    if let Some(u) = req.url {
        if let Err(e) = crate::outbound::check_user_url(&s.config.allowed_private_hosts, &u) {
            errors.push(FieldError::new("url", e));
        }
        w.url = u;
    }
    if req.description.is_some() {
        check_description(&req.description, &mut errors);
        w.description = req.description;
    }
    if let Some(e) = req.events {
        check_events(&e, &mut errors);
        w.events = DbJson(e);
    }
    if let Some(e) = req.enabled {
        w.is_enabled = e;
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    w.updated_at = DbTime::now();
    let stored = s.store.update_webhook(caller.actor(), &w, expected).await?;
    let mut ev = event("webhook", "update", &caller, w.user_id, &meta);
    ev.metadata = DbJson(serde_json::json!({"webhook_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(
        StatusCode::OK,
        stored.row_version,
        WebhookView::from(stored),
    ))
}

/// Delete a webhook endpoint (and its delivery log).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let w = load(&s, &caller, id).await?;
    s.store
        .delete_webhook(caller.actor(), w.user_id, id)
        .await?;
    let mut ev = event("webhook", "delete", &caller, w.user_id, &meta);
    ev.metadata = DbJson(serde_json::json!({"webhook_id": id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_type: String,
    /// pending | delivered | failed
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The signed JSON body.
    pub payload: String,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            id: d.id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.0,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at.0,
            delivered_at: d.delivered_at.map(|t| t.0),
            payload: d.payload,
        }
    }
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path), Page), security(("bearer" = [])),
    responses((status = 200, body = List<DeliveryView>), (status = 404, body = crate::error::Problem)))]
pub async fn deliveries(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<DeliveryView>>> {
    let w = load(&s, &caller, id).await?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_deliveries(caller.actor(), w.id, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        DeliveryView::from,
    )))
}

/// Test events a user may queue per minute (`POST /v1/webhooks/{id}/test`).
const TESTS_PER_MINUTE: i64 = 10;

/// Queue a `webhook.test` event for this one endpoint (whatever it subscribes to), so a
/// receiver can check signatures end to end. The delivery shows in the endpoint's log.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 202, body = DeliveryView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 429, body = crate::error::Problem)))]
pub async fn send_test(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let w = load(&s, &caller, id).await?;
    if !w.is_enabled {
        return Err(ApiError::conflict(
            "webhook_disabled",
            "the endpoint is disabled; enable it to send a test",
        ));
    }
    let now = DbTime::now();
    let payload = serde_json::json!({
        "id": Uuid::now_v7(),
        "type": crate::webhooks::TEST_EVENT,
        "created_at": now.0,
        "user_id": w.user_id,
        "data": {"webhook_id": id, "message": "test event sent from keygate"},
    })
    .to_string();
    let d = DeliveryRecord {
        id: Uuid::now_v7(),
        webhook_id: Some(w.id),
        user_id: w.user_id,
        url: w.url.clone(),
        event_type: crate::webhooks::TEST_EVENT.into(),
        payload,
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        claimed_until: None,
        last_status_code: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    };
    // test events go to an address the user chose, through the queue every user's
    // deliveries share: a few a minute are enough to check a receiver (counted and queued
    // in one transaction, so a burst of parallel requests cannot pass the count together)
    let queued = s
        .store
        .enqueue_delivery_within(
            w.id,
            &d,
            DbTime::new(now.0 - chrono::Duration::minutes(1)),
            TESTS_PER_MINUTE,
        )
        .await?;
    if !queued {
        return Err(ApiError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            detail: format!("at most {TESTS_PER_MINUTE} test events a minute; try again shortly"),
            retry_after: Some(60),
        });
    }
    s.jobs.wake();
    let mut ev = event("webhook", "test", &caller, w.user_id, &meta);
    ev.metadata = DbJson(serde_json::json!({"webhook_id": id, "delivery_id": d.id}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}
