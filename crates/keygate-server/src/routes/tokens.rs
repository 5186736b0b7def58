//! "Sign out everywhere": a user's tokens issued until now are refused from here on, on
//! every instance, and the user's console sessions end (`crate::revocations`). And one
//! token (with the rest of its sign-in session, when it names one) revoked by itself.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use keygate_storage::{DbTime, Json as DbJson};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath};
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens/revoke", post(revoke_own))
        .route("/v1/tokens/revoke-current", post(revoke_current))
        .route("/v1/tokens/revoke-session", post(revoke_session_own))
        .route("/v1/admin/users/{id}/revoke-tokens", post(revoke_user))
        .route(
            "/v1/admin/users/{id}/revoke-session",
            post(revoke_session_user),
        )
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
    // no cap: revoking the token at hand is never refused; the answer is the expiry in
    // force (an earlier revocation's later one is kept)
    let until = s
        .store
        .revoke_sign_in(
            caller.user_id.unwrap_or_else(Uuid::nil),
            caller.sign_in,
            DbTime::new(until),
            DbTime::new(now),
            None,
        )
        .await?
        .map_or(until, |t| t.0);
    s.auth
        .revocations()
        .note_sign_in(caller.user_id, caller.sign_in, until.timestamp());
    // a vault unlocked with this sign-in locks with it
    let vault_locked = match caller.user_id {
        Some(user) => lock_vault(&s, user, Some(caller.sign_in)).await,
        None => false,
    };
    let mut ev = event("auth", "token_revoked", &caller, caller.user_id, &meta);
    ev.metadata = DbJson(serde_json::json!({
        "session": caller.session_id.is_some(),
        "until": until,
        "vault_locked": vault_locked,
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
    let vault_locked = lock_vault(s, user, None).await;
    let mut ev = event("auth", "tokens_revoked", caller, Some(user), meta);
    ev.metadata =
        DbJson(serde_json::json!({"tokens_issued_before": cutoff.0, "vault_locked": vault_locked}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(Json(Revoked {
        user_id: user,
        tokens_issued_before: cutoff.0,
    }))
}

/// Locks `user`'s vault when a revoked sign-in (`None`: all of them) unlocked it: a
/// thief's token revoked must not leave the vault it unlocked open to the platform's
/// calls, or to a token the thief mints later from a stolen refresh token.
///
/// The revocation is committed by then: a failure here is logged and the answer (and
/// audit event, `vault_locked: false`) still goes out.
async fn lock_vault(s: &AppState, user: Uuid, sign_in: Option<Uuid>) -> bool {
    match s.store.close_vault_session_of(user, sign_in).await {
        Ok(locked) => {
            if locked {
                s.keyring.evict(user);
            }
            locked
        }
        Err(e) => {
            tracing::error!(%user, error = %e, "the vault could not be locked with the revocation");
            false
        }
    }
}

/// Token and session revocations one user may have in force when they revoke a session
/// by id themselves (each instance reloads them all every second); past it, sign out
/// everywhere, or have the platform or an admin revoke it (not capped).
pub const MAX_REVOKED_SESSIONS_PER_USER: i64 = 1000;

/// A sign-in session to revoke by its id.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSession {
    /// The `session_id` claim of the session's tokens.
    pub session_id: Uuid,
    /// Until when its tokens are refused (at most a year ahead; default a year): as long
    /// as any of them could still be presented, `exp` plus a minute or so.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// What revoking a session did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedSession {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The session's tokens are refused until this instant.
    pub until: DateTime<Utc>,
}

/// Revoke one of your sign-in sessions by its id, say the one a lost device or a bot
/// holds a token of: every token of yours whose `session_id` claim is this id is refused
/// from here on, on every instance, until `until`, and console sessions opened with one
/// end. Your other sessions keep working. At most 1,000 such revocations in force (409
/// `too_many_revocations`: sign out everywhere instead).
#[utoipa::path(post, path = "/v1/tokens/revoke-session", tag = "auth", request_body = RevokeSession, security(("bearer" = [])),
    responses((status = 200, body = RevokedSession), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn revoke_session_own(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppJson(req): AppJson<RevokeSession>,
) -> ApiResult<Json<RevokedSession>> {
    let user = caller.user()?;
    revoke_session(&s, &caller, user, req, &meta).await
}

/// Admin: revoke one of a user's sign-in sessions by its id (as `/v1/tokens/revoke-session`).
#[utoipa::path(post, path = "/v1/admin/users/{id}/revoke-session", tag = "admin", params(("id" = Uuid, Path)), request_body = RevokeSession, security(("bearer" = [])),
    responses((status = 200, body = RevokedSession), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn revoke_session_user(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<RevokeSession>,
) -> ApiResult<Json<RevokedSession>> {
    // the nil id is where service-role tokens without `sub` are kept: an admin ranks
    // below the platform's backend and must not end its sessions
    if !(caller.admin || caller.service) || id.is_nil() {
        return Err(ApiError::not_found("resource"));
    }
    revoke_session(&s, &caller, id, req, &meta).await
}

async fn revoke_session(
    s: &AppState,
    caller: &Caller,
    user: Uuid,
    req: RevokeSession,
    meta: &RequestMeta,
) -> ApiResult<Json<RevokedSession>> {
    let now = Utc::now();
    let latest = now + chrono::Duration::days(366);
    let until = match req.until {
        None => latest,
        Some(t) if t > now && t <= latest => t,
        Some(_) => {
            return Err(ApiError::field(
                "until",
                "must be in the future and at most 366 days ahead",
            ))
        }
    };
    if req.session_id.is_nil() {
        return Err(ApiError::field("session_id", "must not be the nil UUID"));
    }
    // a user's own revocations are capped; an admin's or the platform's are not, so one
    // stolen token filling its user's cap cannot keep its own session from being revoked
    let cap = (caller.user_id == Some(user) && !caller.admin && !caller.service)
        .then_some(MAX_REVOKED_SESSIONS_PER_USER);
    let stored = s
        .store
        .revoke_sign_in(
            user,
            req.session_id,
            DbTime::new(until),
            DbTime::new(now),
            cap,
        )
        .await?;
    let Some(until) = stored.map(|t| t.0) else {
        return Err(ApiError::conflict(
            "too_many_revocations",
            format!(
                "you have {MAX_REVOKED_SESSIONS_PER_USER} token and session revocations in \
                 force; sign out everywhere (POST /v1/tokens/revoke), or ask the platform \
                 or an admin, who are not limited (POST /v1/admin/users/{{id}}/revoke-session)"
            ),
        ));
    };
    s.auth
        .revocations()
        .note_sign_in(Some(user), req.session_id, until.timestamp());
    let vault_locked = lock_vault(s, user, Some(req.session_id)).await;
    let mut ev = event("auth", "session_revoked", caller, Some(user), meta);
    ev.metadata = DbJson(serde_json::json!({
        "session_id": req.session_id,
        "until": until,
        "vault_locked": vault_locked,
    }));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(Json(RevokedSession {
        user_id: user,
        session_id: req.session_id,
        until,
    }))
}
