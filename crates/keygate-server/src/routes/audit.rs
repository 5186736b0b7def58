//! The audit log: list with filters and cursor paging, chain verification (admin), and
//! export as JSON lines.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{AuditEvent, AuditFilter, ChainReport, DbTime};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::recorder::{event, RequestMeta};
use crate::routes::{page, List};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub seq: i64,
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub category: String,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub user_id: Option<Uuid>,
    pub credential_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    pub endpoint: Option<String>,
    pub http_method: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub device_fingerprint: Option<String>,
    /// Where the client was, as a trusted proxy said (`KEYGATE_GEO_COUNTRY_HEADER`).
    pub geo_country: Option<String>,
    pub geo_city: Option<String>,
    pub session_id: Option<Uuid>,
    pub success: bool,
    pub status_code: Option<i32>,
    pub reason: Option<String>,
    pub risk_score: i32,
    pub risk_reasons: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub hash: String,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            seq: e.seq,
            id: e.id,
            created_at: e.created_at.0,
            category: e.category,
            action: e.action,
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            user_id: e.user_id,
            credential_id: e.credential_id,
            connection_id: e.connection_id,
            endpoint: e.endpoint,
            http_method: e.http_method,
            ip_address: e.ip_address,
            user_agent: e.user_agent,
            device_fingerprint: e.device_fingerprint,
            geo_country: e.geo_country,
            geo_city: e.geo_city,
            session_id: e.session_id,
            success: e.success,
            status_code: e.status_code,
            reason: e.reason,
            risk_score: e.risk_score,
            risk_reasons: e.risk_reasons.0,
            metadata: e.metadata.0,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub credential_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    /// vault | credential | connection | gateway | integration | site_key | webhook | admin
    pub category: Option<String>,
    pub action: Option<String>,
    /// Events at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// `success` or `failure`.
    pub result: Option<String>,
    /// Admins: one user's events (others always see only their own).
    pub user_id: Option<Uuid>,
}

impl AuditQuery {
    /// The storage filter; users are pinned to their own events.
    fn filter(&self, caller: &Caller) -> ApiResult<AuditFilter> {
        let user_id = if caller.admin || caller.service {
            self.user_id
        } else {
            Some(caller.user()?)
        };
        let success = match self.result.as_deref() {
            None => None,
            Some("success") => Some(true),
            Some("failure") => Some(false),
            Some(_) => return Err(ApiError::field("result", "must be success or failure")),
        };
        super::check_filter("category", &self.category)?;
        super::check_filter("action", &self.action)?;
        if let (Some(a), Some(b)) = (self.since, self.until) {
            if a > b {
                return Err(ApiError::field("until", "must not be before since"));
            }
        }
        Ok(AuditFilter {
            user_id,
            credential_id: self.credential_id,
            connection_id: self.connection_id,
            category: self.category.clone(),
            action: self.action.clone(),
            success,
            since: self.since.map(DbTime::new),
            until: self.until.map(DbTime::new),
            before_seq: None,
            after_seq: None,
        })
    }
}

/// Audit events, newest first: your own, or everyone's for admins.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = List<AuditView>), (status = 422, body = crate::error::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<AuditQuery>,
) -> ApiResult<Json<List<AuditView>>> {
    let p = crate::routes::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = p.limit()?;
    let mut f = q.filter(&caller)?;
    f.before_seq = p.cursor_i64()?;
    let rows = s.store.list_audit(caller.actor(), &f, limit + 1).await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.seq.to_string(),
        AuditView::from,
    )))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChainReportView {
    pub ok: bool,
    pub events_checked: i64,
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
}

impl From<ChainReport> for ChainReportView {
    fn from(r: ChainReport) -> Self {
        ChainReportView {
            ok: r.ok,
            events_checked: r.events_checked,
            first_broken_seq: r.first_broken_seq,
            problem: r.problem,
        }
    }
}

/// Admin: verify the audit chain and report the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = ChainReportView), (status = 404, body = crate::error::Problem)))]
#[axum::debug_handler(state = AppState)]
pub async fn verify(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<ChainReportView>> {
    if !(caller.admin || caller.service) {
        return Err(ApiError::not_found("resource"));
    }
    Ok(Json(
        s.store
            .verify_audit_chain(s.chain_key.as_ref())
            .await?
            .into(),
    ))
}

/// The export route (merged separately to keep the main router edit small).
pub fn export_router() -> Router<AppState> {
    Router::new().route("/v1/audit/export", get(export))
}

/// Export audit events as JSON lines (`application/x-ndjson`), oldest first, with the same
/// filters as the list (own events for users, all for admins). Each line is one event
/// including `prev_hash` and `hash`, so an export can be checked offline.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 422, body = crate::error::Problem)))]
pub async fn export(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppQuery(q): AppQuery<AuditQuery>,
) -> ApiResult<Response> {
    let f = q.filter(&caller)?;
    let actor = caller.actor();
    // Exporting everyone's events is an admin action: record it before streaming.
    let mut ev = event("audit", "export", &caller, caller.user_id, &meta);
    ev.metadata = keygate_storage::Json(serde_json::json!({"all_users": f.user_id.is_none()}));
    s.recorder.record(vec![ev], vec![]).await?;
    let store = s.store.clone();
    let stream = futures::stream::unfold((Some(f), 0i64), move |(f, after)| {
        let store = store.clone();
        async move {
            let mut f = f?;
            f.after_seq = Some(after);
            match store.export_audit(actor, &f, 500).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows.last().map(|r| r.seq).unwrap_or(after);
                    let mut buf = Vec::with_capacity(rows.len() * 512);
                    for r in rows {
                        let _ = serde_json::to_writer(&mut buf, &AuditExportLine::from(r));
                        buf.push(b'\n');
                    }
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                        (Some(f), last),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed mid-stream");
                    Some((
                        Err(std::io::Error::other("audit export failed")),
                        (None, after),
                    ))
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"keygate-audit.jsonl\""),
    );
    Ok(r)
}

/// One exported event: the list view plus the chain link.
#[derive(Serialize)]
struct AuditExportLine {
    #[serde(flatten)]
    view: AuditView,
    prev_hash: String,
}

impl From<AuditEvent> for AuditExportLine {
    fn from(e: AuditEvent) -> Self {
        let prev_hash = e.prev_hash.clone();
        AuditExportLine {
            view: AuditView::from(e),
            prev_hash,
        }
    }
}
