use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_exchanges::{Environment, ExchangeId};
use keygate_policy::Scope;
use keygate_storage::{ApiCallRecord, BalanceRecord, ConnectionRecord, DbTime, Json as DbJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::recorder::{event, RequestMeta};
use crate::routes::credentials::{expected_version, parse_limits};
use crate::routes::{page, List, Page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connections", axum::routing::post(create).get(list))
        .route(
            "/v1/connections/{id}",
            get(read).patch(update).delete(remove),
        )
        .route("/v1/connections/{id}/calls", get(calls))
        .route("/v1/connections/{id}/balances", get(balances))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub id: Uuid,
    pub name: String,
    pub exchange: String,
    pub credential_id: Uuid,
    pub base_url: Option<String>,
    pub timeout_ms: i32,
    pub max_retries: i32,
    pub is_default: bool,
    pub is_enabled: bool,
    pub status: String,
    /// Scopes this connection may use (intersected with the credential's); null = all of the credential's.
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub last_successful_ping: Option<DateTime<Utc>>,
    pub last_error_message: Option<String>,
    pub error_count: i32,
    pub warnings: Vec<String>,
    pub last_verified_at: Option<DateTime<Utc>>,
    pub verification_status: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ConnectionRecord> for ConnectionView {
    fn from(c: ConnectionRecord) -> Self {
        ConnectionView {
            id: c.id,
            name: c.name,
            exchange: c.exchange,
            credential_id: c.credential_id,
            base_url: c.base_url,
            timeout_ms: c.timeout_ms,
            max_retries: c.max_retries,
            is_default: c.is_default,
            is_enabled: c.is_enabled,
            status: c.status,
            scopes: c.scopes.map(|s| s.0),
            limits: c.limits.0,
            tags: c.tags.0,
            metadata: c.metadata.0,
            last_successful_ping: c.last_successful_ping.map(|t| t.0),
            last_error_message: c.last_error_message,
            error_count: c.error_count,
            warnings: c.warnings.0,
            last_verified_at: c.last_verified_at.map(|t| t.0),
            verification_status: c.verification_status,
            version: c.row_version,
            created_at: c.created_at.0,
            updated_at: c.updated_at.0,
        }
    }
}

fn with_etag(status: StatusCode, c: ConnectionRecord) -> Response {
    crate::routes::with_etag(status, c.row_version, ConnectionView::from(c))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    pub name: String,
    pub exchange: String,
    pub credential_id: Uuid,
    /// Testnet, regional host or (with KEYGATE_ALLOWED_UPSTREAMS) a local test server.
    pub base_url: Option<String>,
    pub timeout_ms: Option<i32>,
    pub max_retries: Option<i32>,
    pub is_default: Option<bool>,
    pub is_enabled: Option<bool>,
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Value>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Checks a base URL against the exchange's own hosts and `KEYGATE_ALLOWED_UPSTREAMS`
/// (DESIGN.md §7: secrets and signed requests go nowhere else).
pub fn check_base_url(s: &AppState, ex: ExchangeId, raw: &str) -> Result<String, String> {
    base_url_allowed(&s.config.allowed_upstreams, ex, raw)
}

/// [`check_base_url`] against the list `allowed` (`KEYGATE_ALLOWED_UPSTREAMS`): also
/// checked before each use of a stored `base_url` (`gateway::upstream_of`), so a row from
/// a backup or from before the operator narrowed the list is refused, not contacted.
pub fn base_url_allowed(allowed: &[String], ex: ExchangeId, raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|_| "not a valid URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be https (or http for an allowed local upstream)".into());
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("must not contain credentials, a query or a fragment".into());
    }
    // keygate appends the endpoint's path to this URL, and classifies the call (and checks
    // it by policy) on that path alone: a path here would make the exchange act on
    // another endpoint than the one checked (`…/sapi/v1/capital/withdraw` + `/apply`
    // classified as an unknown `/apply`)
    if !matches!(url.path(), "" | "/") {
        return Err("must not contain a path: keygate appends the endpoint's own".into());
    }
    let host = url
        .host_str()
        .ok_or("URL has no host")?
        .to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(443);
    let hosts = ex.api().hosts();
    let own = [Some(hosts.production), hosts.testnet]
        .into_iter()
        .flatten()
        .filter_map(|h| url::Url::parse(h).ok())
        .any(|h| h.host_str() == Some(host.as_str()) && url.scheme() == "https" && port == 443);
    let allowed = allowed.iter().any(|a| match a.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => {
            h == host && p.parse::<u16>().ok() == Some(port)
        }
        _ => *a == host,
    });
    if !own && !allowed {
        return Err(format!(
            "host {host} is neither {ex}'s own API host nor listed in KEYGATE_ALLOWED_UPSTREAMS"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn parse_scopes(v: Option<Vec<String>>, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let v = v?;
    let mut out = Vec::new();
    for s in v {
        if Scope::ALL.iter().any(|x| x.as_str() == s) {
            if !out.contains(&s) {
                out.push(s);
            }
        } else {
            errors.push(FieldError::new(
                "scopes",
                "unknown scope; use read, trade, withdraw, transfer or sub_account",
            ));
        }
    }
    out.sort();
    Some(out)
}

fn check_common(
    name: &str,
    timeout: i32,
    retries: i32,
    tags: &[String],
    meta: &serde_json::Value,
    errors: &mut Vec<FieldError>,
) {
    let n = name.chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) || name.trim() != name {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 100 printable characters without surrounding spaces",
        ));
    }
    if !(100..=60_000).contains(&timeout) {
        errors.push(FieldError::new(
            "timeout_ms",
            "must be between 100 and 60000",
        ));
    }
    if !(0..=5).contains(&retries) {
        errors.push(FieldError::new("max_retries", "must be between 0 and 5"));
    }
    if tags.len() > 32
        || tags
            .iter()
            .any(|t| t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "tags",
            "at most 32 tags of 1 to 64 printable characters",
        ));
    }
    if !meta.is_object() || meta.to_string().len() > 16 * 1024 {
        errors.push(FieldError::new(
            "metadata",
            "must be a JSON object of at most 16 KiB",
        ));
    }
    super::check_json_text("metadata", meta, errors);
}

/// The credential must exist, be the caller's, and be for the same venue.
async fn check_credential(
    s: &AppState,
    caller: &Caller,
    ex: ExchangeId,
    id: Uuid,
    errors: &mut Vec<FieldError>,
) -> ApiResult<Option<Environment>> {
    match s
        .store
        .credential(caller.actor(), caller.user()?, id)
        .await?
    {
        None => {
            errors.push(FieldError::new("credential_id", "no such credential"));
            Ok(None)
        }
        Some(c) => {
            let cex: ExchangeId = c
                .exchange
                .parse()
                .map_err(|_| ApiError::internal("stored exchange unknown"))?;
            if cex.venue() != ex.venue() {
                errors.push(FieldError::new(
                    "credential_id",
                    format!("the credential is for {cex}, not {ex}"),
                ));
            }
            Ok(Some(if c.environment == "testnet" {
                Environment::Testnet
            } else {
                Environment::Production
            }))
        }
    }
}

/// Create a connection to an exchange account through one of your credentials.
#[utoipa::path(post, path = "/v1/connections", tag = "connections", request_body = CreateConnection, security(("bearer" = [])),
    responses((status = 201, body = ConnectionView), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<CreateConnection>,
) -> ApiResult<Response> {
    let user = caller.user()?;
    let ex = req
        .exchange
        .parse::<ExchangeId>()
        .map_err(|_| ApiError::field("exchange", "unknown exchange id; use a CCXT id"))?;
    let mut errors = Vec::new();
    let timeout = req.timeout_ms.unwrap_or(10_000);
    let retries = req.max_retries.unwrap_or(2);
    let tags = req.tags.unwrap_or_default();
    let metadata = req.metadata.unwrap_or_else(|| serde_json::json!({}));
    check_common(&req.name, timeout, retries, &tags, &metadata, &mut errors);
    let base_url = match req.base_url.as_deref() {
        Some(u) => match check_base_url(&s, ex, u) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(FieldError::new("base_url", e));
                None
            }
        },
        None => None,
    };
    let scopes = parse_scopes(req.scopes, &mut errors);
    let limits = parse_limits(req.limits, "limits", &mut errors);
    check_credential(&s, &caller, ex, req.credential_id, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if !caller.service {
        // a new connection is a new way to use the key, under limits of its own: in
        // password mode it takes the password again, like any widening (see `update`)
        crate::routes::rotation::require_fresh_unlock(&s, &caller, user, "connect a credential")
            .await?;
    }
    let now = DbTime::now();
    let rec = ConnectionRecord {
        id: Uuid::now_v7(),
        user_id: user,
        name: req.name,
        exchange: ex.as_str().into(),
        credential_id: req.credential_id,
        base_url,
        timeout_ms: timeout,
        max_retries: retries,
        is_default: req.is_default.unwrap_or(false),
        is_enabled: req.is_enabled.unwrap_or(true),
        status: "new".into(),
        scopes: scopes.map(DbJson),
        limits: DbJson(limits),
        tags: DbJson(tags),
        metadata: DbJson(metadata),
        last_successful_ping: None,
        last_error_message: None,
        error_count: 0,
        warnings: DbJson(vec![]),
        last_verified_at: None,
        verification_status: "unverified".into(),
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    s.store.create_connection(caller.actor(), &rec).await?;
    let mut ev = event("connection", "create", &caller, Some(user), &meta);
    ev.connection_id = Some(rec.id);
    ev.credential_id = Some(rec.credential_id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::CREATED, rec))
}

/// List your connections.
#[utoipa::path(get, path = "/v1/connections", tag = "connections", params(ConnectionQuery), security(("bearer" = [])),
    responses((status = 200, body = List<ConnectionView>), (status = 422, body = crate::error::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<ConnectionQuery>,
) -> ApiResult<Json<List<ConnectionView>>> {
    let user = caller.user()?;
    let p = Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = p.limit()?;
    super::check_filter("exchange", &q.exchange)?;
    super::check_filter("status", &q.status)?;
    let filter = keygate_storage::ConnectionFilter {
        exchange: q.exchange,
        status: q.status,
        is_default: q.is_default,
        is_enabled: q.is_enabled,
        credential_id: q.credential_id,
    };
    let rows = s
        .store
        .list_connections_where(caller.actor(), user, &filter, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        ConnectionView::from,
    )))
}

/// A connection list's paging and filters (each given one must match).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConnectionQuery {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// A CCXT exchange id (`binance`).
    pub exchange: Option<String>,
    /// new | healthy | degraded | failing
    pub status: Option<String>,
    pub is_default: Option<bool>,
    pub is_enabled: Option<bool>,
    /// Connections of this credential.
    pub credential_id: Option<Uuid>,
}

pub(crate) async fn load(s: &AppState, caller: &Caller, id: Uuid) -> ApiResult<ConnectionRecord> {
    s.store
        .connection(caller.actor(), caller.user()?, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))
}

/// Read one connection.
#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connections", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ConnectionView), (status = 404, body = crate::error::Problem)))]
pub async fn read(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    Ok(with_etag(StatusCode::OK, load(&s, &caller, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnection {
    pub name: Option<String>,
    pub credential_id: Option<Uuid>,
    /// `null` resets to the exchange's default host.
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
    pub timeout_ms: Option<i32>,
    pub max_retries: Option<i32>,
    pub is_default: Option<bool>,
    pub is_enabled: Option<bool>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub scopes: Option<Option<Vec<String>>>,
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Value>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub version: Option<i64>,
}

/// Edit a connection (limits included).
#[utoipa::path(patch, path = "/v1/connections/{id}", tag = "connections", params(("id" = Uuid, Path)), request_body = UpdateConnection, security(("bearer" = [])),
    responses((status = 200, body = ConnectionView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<UpdateConnection>,
) -> ApiResult<Response> {
    let mut c = load(&s, &caller, id).await?;
    let expected = expected_version(&headers, req.version, c.row_version)?;
    let before = c.clone();
    let ex: ExchangeId = c
        .exchange
        .parse()
        .map_err(|_| ApiError::internal("stored exchange unknown"))?;
    let mut errors = Vec::new();
    if let Some(n) = req.name {
        c.name = n;
    }
    if let Some(t) = req.timeout_ms {
        c.timeout_ms = t;
    }
    if let Some(r) = req.max_retries {
        c.max_retries = r;
    }
    if let Some(t) = req.tags {
        c.tags = DbJson(t);
    }
    if let Some(m) = req.metadata {
        c.metadata = DbJson(m);
    }
    check_common(
        &c.name,
        c.timeout_ms,
        c.max_retries,
        &c.tags.0,
        &c.metadata.0,
        &mut errors,
    );
    if let Some(b) = req.base_url {
        c.base_url = match b {
            None => None,
            Some(u) => match check_base_url(&s, ex, &u) {
                Ok(u) => Some(u),
                Err(e) => {
                    errors.push(FieldError::new("base_url", e));
                    None
                }
            },
        };
    }
    if let Some(cid) = req.credential_id {
        check_credential(&s, &caller, ex, cid, &mut errors).await?;
        c.credential_id = cid;
    }
    if let Some(d) = req.is_default {
        c.is_default = d;
    }
    if let Some(e) = req.is_enabled {
        c.is_enabled = e;
    }
    if let Some(sc) = req.scopes {
        c.scopes = parse_scopes(sc, &mut errors).map(DbJson);
    }
    if let Some(l) = req.limits {
        c.limits = DbJson(parse_limits(Some(l), "limits", &mut errors));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if !caller.service && widens(&before, &c) {
        // A bearer token alone must not lift the policy it is held to: in password mode,
        // widening what the connection may do takes the password again (a fresh unlock).
        crate::routes::rotation::require_fresh_unlock(
            &s,
            &caller,
            c.user_id,
            "widen a connection's scopes, limits, key or upstream, or enable it",
        )
        .await?;
    }
    c.updated_at = DbTime::now();
    let stored = s
        .store
        .update_connection(
            caller.actor(),
            &c,
            expected,
            // another key or upstream: due for the background sync at once
            before.credential_id != c.credential_id || before.base_url != c.base_url,
        )
        .await?;
    let mut ev = event("connection", "update", &caller, Some(c.user_id), &meta);
    ev.connection_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(with_etag(StatusCode::OK, stored))
}

/// Whether `after` lets calls through the connection do anything `before` did not: enabled
/// again, another credential or upstream, a scope added (or the scope list dropped), or
/// limits that are looser.
fn widens(before: &ConnectionRecord, after: &ConnectionRecord) -> bool {
    let scopes = match (&before.scopes, &after.scopes) {
        (Some(b), Some(a)) => a.0.iter().any(|x| !b.0.contains(x)),
        (Some(_), None) => true,
        (None, _) => false,
    };
    (after.is_enabled && !before.is_enabled)
        || after.credential_id != before.credential_id
        || after.base_url != before.base_url
        || scopes
        || crate::routes::credentials::limits_widen(&before.limits.0, &after.limits.0)
}

/// Delete a connection (its call log and balances go with it; audit events stay).
#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connections", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let user = caller.user()?;
    if !s.store.delete_connection(caller.actor(), user, id).await? {
        return Err(ApiError::not_found("connection"));
    }
    let mut ev = event("connection", "delete", &caller, Some(user), &meta);
    ev.connection_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiCallView {
    pub id: Uuid,
    pub method: String,
    pub endpoint: String,
    pub class: String,
    pub decision: String,
    pub deny_code: Option<String>,
    pub status_code: Option<i32>,
    pub response_time_ms: Option<i32>,
    pub success: bool,
    pub error_message: Option<String>,
    pub rate_limit_remaining: Option<i64>,
    /// When the exchange's current rate-limit window ends, where it says.
    pub rate_limit_reset: Option<DateTime<Utc>>,
    /// Weight (or requests) the exchange reported used in its current window.
    pub rate_limit_used: Option<i64>,
    /// The credential that signed (or would have signed) the call.
    pub credential_id: Uuid,
    pub ip_address: Option<String>,
    /// The caller's `User-Agent` (at most 500 characters).
    pub user_agent: Option<String>,
    /// The caller's sign-in session (the token's `session_id`), when it names one.
    pub session_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<ApiCallRecord> for ApiCallView {
    fn from(r: ApiCallRecord) -> Self {
        ApiCallView {
            id: r.id,
            method: r.method,
            endpoint: r.endpoint,
            class: r.class,
            decision: r.decision,
            deny_code: r.deny_code,
            status_code: r.status_code,
            response_time_ms: r.response_time_ms,
            success: r.success,
            error_message: r.error_message,
            rate_limit_remaining: r.rate_limit_remaining,
            rate_limit_reset: r.rate_limit_reset.map(|t| t.0),
            rate_limit_used: r.rate_limit_used,
            credential_id: r.credential_id,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
            session_id: r.session_id,
            created_at: r.created_at.0,
        }
    }
}

/// The connection's exchange call log, newest first.
#[utoipa::path(get, path = "/v1/connections/{id}/calls", tag = "connections", params(("id" = Uuid, Path), Page), security(("bearer" = [])),
    responses((status = 200, body = List<ApiCallView>), (status = 404, body = crate::error::Problem)))]
pub async fn calls(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<ApiCallView>>> {
    let c = load(&s, &caller, id).await?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_api_calls(caller.actor(), c.user_id, id, p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        ApiCallView::from,
    )))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceView {
    pub id: Uuid,
    pub asset: String,
    pub account_type: String,
    pub free: String,
    pub locked: String,
    pub total: String,
    pub usd_value: Option<String>,
    /// The asset's USD price the value was computed with, where known.
    pub last_price: Option<String>,
    pub synced_at: DateTime<Utc>,
}

impl From<BalanceRecord> for BalanceView {
    fn from(b: BalanceRecord) -> Self {
        BalanceView {
            id: b.id,
            asset: b.asset,
            account_type: b.account_type,
            free: b.free,
            locked: b.locked,
            total: b.total,
            usd_value: b.usd_value,
            last_price: b.last_price,
            synced_at: b.synced_at.0,
        }
    }
}

/// Balances from the last sync.
#[utoipa::path(get, path = "/v1/connections/{id}/balances", tag = "connections", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = List<BalanceView>), (status = 404, body = crate::error::Problem)))]
pub async fn balances(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<List<BalanceView>>> {
    let c = load(&s, &caller, id).await?;
    let rows = s.store.balances(caller.actor(), c.user_id, id).await?;
    Ok(Json(List {
        items: rows.into_iter().map(BalanceView::from).collect(),
        next_cursor: None,
    }))
}
