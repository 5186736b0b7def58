//! "Sign out everywhere": a user's tokens issued until now are refused from here on, on
//! every instance, and the user's console sessions end (`crate::revocations`). And one
//! token (with the rest of its sign-in session, when it names one) revoked by itself.

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
        .route("/v1/tokens/revoke-current", post(revoke_current))
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

/// What revoking the presented token did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedToken {
    /// The token's user (absent for a service-role token without `sub`).
    pub user_id: Option<Uuid>,
    /// Whether the token named a sign-in session (`session_id`): then every token of
    /// that session is refused too, until `until`.
    pub session: bool,
    /// Until when it (and its session's tokens) are refused: the token's own expiry, the
    /// clock-skew leeway keygate allows past it, and a minute.
    pub until: DateTime<Utc>,
}

/// Revoke this token: the bearer token making this call (and, when it carries a
/// `session_id` claim, every token of that sign-in session) is refused from here on, on
/// every instance, until the token would have expired, and console sessions opened with
/// it end. Your other tokens keep working. A service-role token can revoke itself.
#[utoipa::path(post, path = "/v1/tokens/revoke-current", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = RevokedToken), (status = 400, body = crate::error::Problem),
              (status = 401, body = crate::error::Problem)))]
pub async fn revoke_current(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<RevokedToken>> {
    let token = crate::auth::bearer_in(&headers).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bearer_token_required",
            "only a bearer token can be revoked this way; sign out of the console instead",
        )
    })?;
    let (verified, exp, _) = s.auth.verify_with_expiry(token).await?;
    // the token verified must be the caller (a console session could carry a header too)
    if verified.sign_in != caller.sign_in {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bearer_token_required",
            "only the bearer token making the call can be revoked this way",
        ));
    }
    // kept while the token could still be accepted (its `exp` and the clock-skew leeway)
    // and a minute for the instances' clocks; bounded, so a token with a far `exp`
    // leaves no row for ever
    let now = Utc::now();
    let until = exp
        .saturating_add(crate::auth::LEEWAY_SECS as i64 + 60)
        .min((now + chrono::Duration::days(366)).timestamp());
    let until = DateTime::from_timestamp(until, 0).unwrap_or(now);
    s.store
        .revoke_sign_in(
            caller.user_id.unwrap_or_else(Uuid::nil),
            caller.sign_in,
            DbTime::new(until),
            DbTime::new(now),
        )
        .await?;
    s.auth
        .revocations()
        .note_sign_in(caller.user_id, caller.sign_in, until.timestamp());
    let mut ev = event("auth", "token_revoked", &caller, caller.user_id, &meta);
    ev.metadata = DbJson(serde_json::json!({
        "session": caller.session_id.is_some(),
        "until": until,
    }));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(Json(RevokedToken {
        user_id: caller.user_id,
        session: caller.session_id.is_some(),
        until,
    }))
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
