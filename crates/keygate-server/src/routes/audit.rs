use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{AuditEvent, AuditFilter, ChainReport};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
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
    /// vault | credential | connection | gateway | admin
    pub category: Option<String>,
    pub action: Option<String>,
    /// Admins: one user's events (others always see only their own).
    pub user_id: Option<Uuid>,
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
    let user_id = if caller.admin || caller.service {
        q.user_id
    } else {
        Some(caller.user()?)
    };
    let f = AuditFilter {
        user_id,
        credential_id: q.credential_id,
        category: q.category,
        action: q.action,
        before_seq: p.cursor_i64()?,
    };
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
