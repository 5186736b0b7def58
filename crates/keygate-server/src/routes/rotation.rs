//! Rotation schedules per credential (seed `api_key_rotation_schedule`), what is due, and
//! reactivation of suspended credentials (owner only, fresh unlock in password mode).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use keygate_storage::{DbTime, RotationSchedule};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::recorder::{event, RequestMeta};
use crate::routes::credentials::{expected_version, load, CredentialView};
use crate::routes::List;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/credentials/{id}/rotation-schedule",
            get(read_schedule).put(put_schedule).delete(delete_schedule),
        )
        .route("/v1/rotation", get(due))
        .route("/v1/credentials/{id}/reactivate", post(reactivate))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub credential_id: Uuid,
    pub interval_days: i32,
    pub next_due_at: DateTime<Utc>,
    pub auto_rotation_enabled: bool,
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// `next_due_at` has passed.
    pub is_overdue: bool,
    /// Whole days since `next_due_at` (0 when not overdue).
    pub days_overdue: i64,
    /// The reminders sent for this due date, in order (`before_30d`, `before_14d`,
    /// `before_7d`, `before_1d`, `overdue_0d`, …): the seed's `reminder_sent_*` flags.
    pub reminders_sent: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The view of `r` now, with the reminders sent for its due date.
async fn schedule_view(s: &AppState, r: RotationSchedule) -> ApiResult<ScheduleView> {
    let prefix = format!("rotation:{}:{}:", r.credential_id, r.next_due_at.micros());
    let reminders_sent = s
        .store
        .reminders_sent(r.credential_id)
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let late = Utc::now() - r.next_due_at.0;
    Ok(ScheduleView {
        credential_id: r.credential_id,
        interval_days: r.interval_days,
        next_due_at: r.next_due_at.0,
        auto_rotation_enabled: r.auto_rotation_enabled,
        last_rotated_at: r.last_rotated_at.map(|t| t.0),
        is_overdue: late > Duration::zero(),
        days_overdue: late.num_days().max(0),
        reminders_sent,
        created_at: r.created_at.0,
        updated_at: r.updated_at.0,
    })
}

/// A credential's rotation schedule.
#[utoipa::path(get, path = "/v1/credentials/{id}/rotation-schedule", tag = "rotation", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ScheduleView), (status = 404, body = crate::error::Problem)))]
pub async fn read_schedule(
    State(s): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Json<ScheduleView>> {
    let c = load(&s, &caller, id).await?;
    let r = s
        .store
        .rotation_schedule(caller.actor(), c.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("rotation schedule"))?;
    schedule_view(&s, r).await.map(Json)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSchedule {
    /// Days between rotations (1–3650).
    pub interval_days: i32,
    /// Next due date; default: now + interval.
    #[serde(default)]
    pub next_due_at: Option<DateTime<Utc>>,
    /// Stored for the platform's own rotation tooling (keygate does not rotate keys at
    /// the exchange); left out, the stored value is kept (`false` for a new schedule).
    #[serde(default)]
    pub auto_rotation_enabled: Option<bool>,
}

/// Set (create or replace) a credential's rotation schedule.
#[utoipa::path(put, path = "/v1/credentials/{id}/rotation-schedule", tag = "rotation", params(("id" = Uuid, Path)), request_body = PutSchedule,
    security(("bearer" = [])),
    responses((status = 200, body = ScheduleView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn put_schedule(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
    AppJson(req): AppJson<PutSchedule>,
) -> ApiResult<Json<ScheduleView>> {
    let c = load(&s, &caller, id).await?;
    let mut errors = Vec::new();
    if !(1..=3650).contains(&req.interval_days) {
        errors.push(FieldError::new(
            "interval_days",
            "must be between 1 and 3650",
        ));
    }
    let now = DbTime::now();
    if let Some(d) = req.next_due_at {
        super::check_instant("next_due_at", &d, &mut errors);
        if d > now.0 + Duration::days(3650) {
            errors.push(FieldError::new("next_due_at", "must be within 10 years"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let actor = caller.actor();
    let existing = s.store.rotation_schedule(actor, c.user_id, id).await?;
    let rec = RotationSchedule {
        credential_id: id,
        user_id: c.user_id,
        interval_days: req.interval_days,
        next_due_at: req
            .next_due_at
            .map(DbTime::new)
            .unwrap_or_else(|| DbTime::new(now.0 + Duration::days(req.interval_days as i64))),
        // left out: kept (a PUT that changes the interval does not turn it off)
        auto_rotation_enabled: req
            .auto_rotation_enabled
            .or(existing.as_ref().map(|e| e.auto_rotation_enabled))
            .unwrap_or(false),
        last_rotated_at: existing.as_ref().and_then(|e| e.last_rotated_at),
        created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
        updated_at: now,
    };
    let stored = s.store.put_rotation_schedule(actor, &rec).await?;
    let mut ev = event(
        "credential",
        "rotation_schedule_set",
        &caller,
        Some(c.user_id),
        &meta,
    );
    ev.credential_id = Some(id);
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "interval_days": stored.interval_days, "next_due_at": stored.next_due_at.0}));
    s.recorder.record(vec![ev], vec![]).await?;
    schedule_view(&s, stored).await.map(Json)
}

/// Remove a credential's rotation schedule.
#[utoipa::path(delete, path = "/v1/credentials/{id}/rotation-schedule", tag = "rotation", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_schedule(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<StatusCode> {
    let c = load(&s, &caller, id).await?;
    if !s
        .store
        .delete_rotation_schedule(caller.actor(), c.user_id, id)
        .await?
    {
        return Err(ApiError::not_found("rotation schedule"));
    }
    let mut ev = event(
        "credential",
        "rotation_schedule_delete",
        &caller,
        Some(c.user_id),
        &meta,
    );
    ev.credential_id = Some(id);
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DueView {
    pub credential_id: Uuid,
    pub label: String,
    pub exchange: String,
    pub interval_days: i32,
    pub next_due_at: DateTime<Utc>,
    /// Negative when overdue.
    pub days_until_due: i64,
    /// due_soon | overdue
    pub state: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DueQuery {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Include credentials due within this many days (0–3650, default 30).
    pub within_days: Option<i64>,
}

/// Your credentials whose rotation is due (overdue first, then soonest).
#[utoipa::path(get, path = "/v1/rotation", tag = "rotation", params(DueQuery), security(("bearer" = [])),
    responses((status = 200, body = List<DueView>), (status = 422, body = crate::error::Problem)))]
pub async fn due(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<DueQuery>,
) -> ApiResult<Json<List<DueView>>> {
    let user = caller.user()?;
    let p = crate::routes::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = p.limit()?;
    let within = q.within_days.unwrap_or(30);
    if !(0..=3650).contains(&within) {
        return Err(ApiError::field("within_days", "must be between 0 and 3650"));
    }
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let bad = || ApiError::field("cursor", "not a cursor returned by this API");
            let (t, id) = c.split_once('_').ok_or_else(bad)?;
            Some((
                DbTime::from_micros(t.parse().map_err(|_| bad())?),
                Uuid::parse_str(id).map_err(|_| bad())?,
            ))
        }
    };
    let now = DbTime::now();
    let horizon = DbTime::new(now.0 + Duration::days(within));
    let rows = s
        .store
        .rotations_due(caller.actor(), Some(user), horizon, after, limit + 1)
        .await?;
    Ok(Json(crate::routes::page(
        rows,
        limit,
        |r| format!("{}_{}", r.next_due_at.micros(), r.credential_id),
        |r| {
            let left = r.next_due_at.0 - now.0;
            DueView {
                credential_id: r.credential_id,
                label: r.label,
                exchange: r.exchange,
                interval_days: r.interval_days,
                next_due_at: r.next_due_at.0,
                days_until_due: left.num_days(),
                state: if left <= Duration::zero() {
                    "overdue".into()
                } else {
                    "due_soon".into()
                },
            }
        },
    )))
}

/// In password mode, the unlock session must be younger than
/// `reactivate_fresh_unlock_minutes`, and opened in the caller's own sign-in
/// ([`Caller::sign_in`]: the token's `session_id`, else the token itself, or the console
/// session), so another token of the same user, say a bot's, cannot ride on the owner's
/// unlock. A vault without a password has no unlock to ask for: there the caller must
/// have signed in within `recent_sign_in_minutes` instead
/// ([`Caller::require_recent_sign_in`]), so a stolen token cannot lift the policy either. `to` says what it is for, in the error
/// ("reactivate a credential").
pub async fn require_fresh_unlock(
    s: &AppState,
    caller: &Caller,
    user: Uuid,
    to: &str,
) -> ApiResult<()> {
    let actor = caller.actor();
    if s.store.vault(actor, user).await?.is_none() {
        return caller.require_recent_sign_in(s.config.recent_sign_in_minutes, to);
    }
    let now = DbTime::now();
    let fresh = Duration::minutes(s.config.reactivate_fresh_unlock_minutes as i64);
    match s.store.vault_session(actor, user, now).await? {
        Some(sess) if now.0 - sess.unlocked_at.0 <= fresh && caller.sign_in == sess.session_id => {
            Ok(())
        }
        _ => Err(ApiError::forbidden(
            "fresh_unlock_required",
            format!(
                "unlock the vault again (within the last {} minutes) to {to}",
                s.config.reactivate_fresh_unlock_minutes
            ),
        )),
    }
}

/// Reactivate a suspended credential: the owner only (not a service or another admin),
/// with a fresh vault unlock in password mode. Send `If-Match` to guard against a
/// concurrent edit.
#[utoipa::path(post, path = "/v1/credentials/{id}/reactivate", tag = "credentials", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = CredentialView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn reactivate(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
) -> ApiResult<Response> {
    if caller.service {
        return Err(ApiError::forbidden(
            "owner_required",
            "only the credential's owner can reactivate it",
        ));
    }
    let mut c = load(&s, &caller, id).await?;
    let expected = expected_version(&headers, None, c.row_version)?;
    if c.status != "suspended" {
        return Err(ApiError::conflict(
            "credential_not_suspended",
            format!("the credential is {}, not suspended", c.status),
        ));
    }
    require_fresh_unlock(&s, &caller, c.user_id, "reactivate a credential").await?;
    let previous_reason = c.suspended_reason.take();
    c.status = "active".into();
    c.updated_at = DbTime::now();
    let stored = s
        .store
        .update_credential(caller.actor(), &c, expected)
        .await?;
    let mut ev = event("credential", "reactivate", &caller, Some(c.user_id), &meta);
    ev.credential_id = Some(id);
    ev.metadata = keygate_storage::Json(serde_json::json!({"suspended_reason": previous_reason}));
    s.recorder.record(vec![ev], vec![]).await?;
    Ok(crate::routes::with_etag(
        StatusCode::OK,
        stored.row_version,
        CredentialView::from(stored),
    ))
}
