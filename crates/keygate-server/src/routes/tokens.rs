//! "Sign out everywhere": a user's tokens issued until now are refused from here on, on
//! every instance, and the user's console sessions end (`crate::revocations`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{DbTime, Json as DbJson};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppPath;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens/revoke", post(revoke_own))
        .route("/v1/admin/users/{id}/revoke-tokens", post(revoke_user))
}

/// What a revocation did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub user_id: Uuid,
    /// Tokens of this user issued before this instant (their `iat`) are refused; a token
    /// without `iat` is refused too. Get a new token after it.
    pub tokens_issued_before: DateTime<Utc>,
}

/// Sign out everywhere: every token of yours issued until now, including the one making
/// this call, is refused from here on, and your console sessions end.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Revoked), (status = 403, body = crate::error::Problem)))]
pub async fn revoke_own(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
) -> ApiResult<Json<Revoked>> {
    let user = caller.user()?;
    revoke(&s, &caller, user, &meta).await
}

/// Admin: sign a user out everywhere (every token issued until now, and the console
/// sessions).
#[utoipa::path(post, path = "/v1/admin/users/{id}/revoke-tokens", tag = "admin", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Revoked), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_user(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<Revoked>> {
    if !(caller.admin || caller.service) {
        return Err(ApiError::not_found("resource"));
    }
    revoke(&s, &caller, id, &meta).await
}

async fn revoke(
    s: &AppState,
    caller: &Caller,
    user: Uuid,
    meta: &RequestMeta,
) -> ApiResult<Json<Revoked>> {
    let now = DbTime::now();
    // `iat` has whole seconds: every token issued in this second is refused too
    let before = DbTime::new(DateTime::from_timestamp(now.0.timestamp() + 1, 0).unwrap_or(now.0));
    let cutoff = s.store.revoke_tokens(user, before, now).await?;
    s.auth.revocations().note(user, cutoff);
    let mut ev = event("auth", "tokens_revoked", caller, Some(user), meta);
    ev.metadata = DbJson(serde_json::json!({"tokens_issued_before": cutoff.0}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(Json(Revoked {
        user_id: user,
        tokens_issued_before: cutoff.0,
    }))
}
