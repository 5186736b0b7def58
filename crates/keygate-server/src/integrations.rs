//! OAuth tokens of integrations: sealing with the user's DEK, and refresh with the RFC 6749
//! §6 `refresh_token` grant (form body with `client_id` / `client_secret`).
//!
//! Outcomes: success → new tokens sealed (a rotated refresh token replaces the old one,
//! otherwise the old one is kept); `invalid_grant` → the integration is marked
//! `needs_reconsent` (audit event + webhook) and not retried; timeout, network error or 5xx
//! → retried later (`next_attempt_at`, exponential backoff). Tokens of a password-mode
//! user can be refreshed only while their vault is unlocked (retried later otherwise).

use std::time::Duration;

use keygate_crypto::{open_field, seal_field, FieldAad};
use keygate_storage::{Actor, DbTime, IntegrationRecord, IntegrationTokenRecord, Json};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::keyring::DekHandle;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

pub const F_CLIENT_SECRET: &str = "client_secret";
pub const F_ACCESS_TOKEN: &str = "access_token";
pub const F_REFRESH_TOKEN: &str = "refresh_token";

/// Tokens expiring within this are refreshed by the job.
pub const REFRESH_AHEAD: chrono::Duration = chrono::Duration::minutes(5);

pub fn seal(dek: &DekHandle, user: Uuid, record: Uuid, field: &str, v: &str) -> Vec<u8> {
    let aad = FieldAad {
        user_id: user,
        record_id: record,
        field,
        key_version: dek.version,
    };
    seal_field(&dek.dek, &aad, v.as_bytes())
}

pub fn open(
    dek: &DekHandle,
    user: Uuid,
    record: Uuid,
    field: &str,
    ct: &[u8],
) -> Result<SecretString, ApiError> {
    let aad = FieldAad {
        user_id: user,
        record_id: record,
        field,
        key_version: dek.version,
    };
    let pt = open_field(&dek.dek, &aad, ct)?;
    let s = std::str::from_utf8(&pt).map_err(|_| ApiError::internal("sealed field not UTF-8"))?;
    Ok(SecretString::from(s))
}

/// What a refresh attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    NeedsReconsent,
    /// Will be retried at the recorded `next_attempt_at`.
    RetryLater(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
}

/// Retry delay after `attempts` failures: 30 s doubling, capped at 1 h.
fn retry_delay(attempts: i32) -> chrono::Duration {
    let secs = 30i64.saturating_mul(1i64 << attempts.clamp(1, 10).saturating_sub(1));
    chrono::Duration::seconds(secs.min(3600))
}

/// Refreshes one integration's tokens now, acting as `actor` (owner, or the service
/// identity for the job).
///
/// One refresh of an integration at a time, across every instance: a lease on
/// `integration_refresh:<id>` in `job_leases` is taken first (held for the token
/// endpoint's timeout and a margin, given back at the end), else `refresh_in_progress`
/// (409). Under it the token row is read again: if a refresh finished since the caller
/// read it (`refreshed_at` moved), nothing is sent; otherwise the refresh uses the row as
/// it is now (a DEK rotation may have re-sealed it). Two refreshes
/// with one refresh token would make a provider that rotates them refuse the second
/// (`invalid_grant`) and mark the integration `needs_reconsent`.
pub async fn refresh(
    state: &AppState,
    actor: Actor,
    integ: &IntegrationRecord,
    tok: &IntegrationTokenRecord,
    now: DbTime,
) -> Result<RefreshOutcome, ApiError> {
    let lease = format!("integration_refresh:{}", integ.id);
    let holder = Uuid::now_v7().to_string();
    if !state
        .store
        .try_job_lease(&lease, &holder, DbTime::now(), lease_until(state))
        .await?
    {
        return Err(refresh_in_progress());
    }
    // paused since the caller read it (a job pass lists integrations before it gets to
    // them): not sent
    let paused = match state.store.integration_by_id(integ.id).await {
        Ok(i) => i.is_some_and(|i| i.status == "disabled"),
        Err(e) => {
            let _ = state.store.release_job_lease(&lease, &holder).await;
            return Err(e.into());
        }
    };
    let out = if paused {
        Err(integration_disabled())
    } else {
        match state
            .store
            .integration_token(actor, integ.user_id, integ.id)
            .await
        {
            // the latest tokens, unless a refresh finished since the caller read them (a DEK
            // rotation re-seals them without refreshing: not that)
            Ok(Some(current)) if current.refreshed_at == tok.refreshed_at => {
                refresh_claimed(state, actor, integ, &current, now, &lease, &holder).await
            }
            // refreshed (or removed) since the caller read it: the tokens are current
            Ok(_) => Ok(RefreshOutcome::Refreshed),
            Err(e) => Err(e.into()),
        }
    };
    if let Err(e) = state.store.release_job_lease(&lease, &holder).await {
        tracing::warn!(integration = %integ.id, error = %e, "the refresh lease could not be given back; it expires by itself");
    }
    out
}

/// Longer than a refresh's own work after the token endpoint answered.
const REFRESH_LEASE_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

/// A refresh lease taken now ends after the token request's timeout and the margin.
pub(crate) fn lease_until(state: &AppState) -> DbTime {
    DbTime::new(
        chrono::Utc::now()
            + chrono::Duration::milliseconds(state.config.oauth_timeout_ms as i64)
            + REFRESH_LEASE_MARGIN,
    )
}

/// A token endpoint's answer is a few hundred bytes; a longer one is refused unread.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// 409 for a paused integration's token or refresh.
pub(crate) fn integration_disabled() -> ApiError {
    ApiError::conflict(
        "integration_disabled",
        "this integration is disabled: enable it (PATCH with \"enabled\": true) first",
    )
}

pub(crate) fn refresh_in_progress() -> ApiError {
    ApiError::conflict(
        "refresh_in_progress",
        "another refresh of this integration is under way; read it again shortly",
    )
}

async fn refresh_claimed(
    state: &AppState,
    actor: Actor,
    integ: &IntegrationRecord,
    tok: &IntegrationTokenRecord,
    now: DbTime,
    lease: &str,
    holder: &str,
) -> Result<RefreshOutcome, ApiError> {
    let user = integ.user_id;
    let retry = |why: String| async move {
        let attempts = tok.refresh_attempts + 1;
        state
            .store
            .record_refresh_failure(
                actor,
                &keygate_storage::RefreshFailure {
                    user_id: user,
                    integration_id: integ.id,
                    attempts,
                    next_attempt_at: Some(DbTime::new(now.0 + retry_delay(attempts))),
                    error: why.clone(),
                    now,
                    refreshed_at: tok.refreshed_at,
                },
            )
            .await?;
        Ok::<_, ApiError>(RefreshOutcome::RetryLater(why))
    };
    // saved before keygate checked token URLs (their address, then their scheme), or
    // since taken off the operator's list
    let allowed = &state.config.allowed_private_hosts;
    let refused = crate::outbound::check_target(allowed, &integ.token_url)
        .map_err(|e| ("token_url_not_public", e))
        .and_then(|()| {
            crate::outbound::check_token_scheme(allowed, &integ.token_url)
                .map_err(|e| ("token_url_not_https", e))
        });
    if let Err((reason, e)) = refused {
        state
            .store
            .set_integration_status(actor, user, integ.id, "error", Some(reason), now)
            .await?;
        audit(
            state,
            user,
            integ.id,
            "token_refresh",
            false,
            Some(reason.into()),
        )
        .await?;
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "token_refresh_failed",
            format!("the token endpoint was not contacted: {e}"),
        ));
    }
    let Some(rt_ct) = tok.refresh_token_ct.as_deref() else {
        return Err(ApiError::conflict(
            "no_refresh_token",
            "this integration has no refresh token",
        ));
    };
    let dek = match state
        .keyring
        .dek(actor, user, Some(tok.dek_version as u32))
        .await
    {
        Ok(d) => d,
        Err(e) if e.code() == "vault_locked" => return retry("vault_locked".into()).await,
        Err(e) => return Err(e),
    };
    let refresh_token = open(&dek, user, integ.id, F_REFRESH_TOKEN, rt_ct)?;
    // The key that will seal the new tokens, taken before the provider is asked: once it
    // has answered (and perhaps retired this refresh token), a vault that locked in the
    // meantime must not lose the new ones.
    let sealing = match state.keyring.dek(actor, user, None).await {
        Ok(d) => d,
        Err(e) if e.code() == "vault_locked" => return retry("vault_locked".into()).await,
        Err(e) => return Err(e),
    };
    let client_secret = match &integ.client_secret_ct {
        Some(ct) => {
            let d = state
                .keyring
                .dek(actor, user, Some(integ.dek_version as u32))
                .await?;
            Some(open(&d, user, integ.id, F_CLIENT_SECRET, ct)?)
        }
        None => None,
    };
    let body = {
        let mut f = url::form_urlencoded::Serializer::new(String::new());
        f.append_pair("grant_type", "refresh_token");
        f.append_pair("refresh_token", refresh_token.expose_secret());
        f.append_pair("client_id", &integ.client_id);
        if let Some(cs) = &client_secret {
            f.append_pair("client_secret", cs.expose_secret());
        }
        SecretString::from(f.finish())
    };
    // the exchange of this refresh token for new ones must finish under the lease: renew
    // it for the request's whole timeout now that the slow parts before it are done
    if !state
        .store
        .renew_job_lease(lease, holder, DbTime::now(), lease_until(state))
        .await?
    {
        // it ran out while the slow parts ran: another refresh may have used this token
        return Err(refresh_in_progress());
    }
    let res = state
        .http
        .post(&integ.token_url)
        .timeout(Duration::from_millis(state.config.oauth_timeout_ms))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body.expose_secret().to_string())
        .send()
        .await;
    let resp = match res {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return retry("token endpoint timed out".into()).await,
        Err(_) => return retry("token endpoint unreachable".into()).await,
    };
    let status = resp.status();
    let bytes = match crate::outbound::read_capped(resp, MAX_TOKEN_RESPONSE_BYTES).await {
        Some(b) => b,
        None => return retry("token endpoint response unreadable or over 64 KiB".into()).await,
    };
    if status.is_server_error() || status.as_u16() == 429 {
        return retry(format!("token endpoint answered {}", status.as_u16())).await;
    }
    if !status.is_success() {
        // stored, audited and shown to admins: only an error code's shape is taken (a
        // provider that puts anything else there, a credential even, is not echoed)
        let code = serde_json::from_slice::<TokenError>(&bytes)
            .ok()
            .map(|e| e.error)
            .filter(|c| {
                (1..=64).contains(&c.len())
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            })
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        let i = state
            .store
            .set_integration_status(
                actor,
                user,
                integ.id,
                if code == "invalid_grant" {
                    "needs_reconsent"
                } else {
                    "error"
                },
                Some(&code),
                now,
            )
            .await?;
        audit(
            state,
            user,
            integ.id,
            "token_refresh",
            false,
            Some(code.clone()),
        )
        .await?;
        if i.status == "needs_reconsent" {
            // once, when it changes: a token endpoint that keeps refusing must not turn
            // every retry into a round of webhook deliveries
            if integ.status != "needs_reconsent" {
                notify_reconsent(state, &i, &code, now).await?;
            }
            return Ok(RefreshOutcome::NeedsReconsent);
        }
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "token_refresh_failed",
            format!("the token endpoint refused the refresh ({code})"),
        ));
    }
    let tr: TokenResponse = match serde_json::from_slice(&bytes) {
        Ok(t) => t,
        Err(_) => return retry("token endpoint sent an unusable response".into()).await,
    };
    let new_rt = tr.refresh_token.as_ref().unwrap_or(&refresh_token);
    let token_type = tr
        .token_type
        .clone()
        .unwrap_or_else(|| tok.token_type.clone());
    let scopes = match &tr.scope {
        Some(s) => Json(s.split_whitespace().map(String::from).collect()),
        None => tok.scopes.clone(),
    };
    let expires_at = tr
        .expires_in
        .map(|s| DbTime::new(now.0 + chrono::Duration::seconds(s.clamp(0, 10 * 365 * 86_400))));
    let record = |sealing: &crate::keyring::DekHandle| IntegrationTokenRecord {
        integration_id: integ.id,
        user_id: user,
        access_token_ct: seal(
            sealing,
            user,
            integ.id,
            F_ACCESS_TOKEN,
            tr.access_token.expose_secret(),
        ),
        refresh_token_ct: Some(seal(
            sealing,
            user,
            integ.id,
            F_REFRESH_TOKEN,
            new_rt.expose_secret(),
        )),
        token_type: token_type.clone(),
        scopes: scopes.clone(),
        expires_at,
        dek_version: sealing.version as i32,
        refreshed_at: Some(now),
        refresh_attempts: 0,
        // at most one refresh a minute, whatever lifetime the provider claims: an answer
        // of `expires_in: 0` would otherwise keep the integration due on every pass
        next_attempt_at: Some(DbTime::new(now.0 + MIN_REFRESH_INTERVAL)),
        last_error: None,
        created_at: tok.created_at,
        updated_at: now,
    };
    // The provider may have retired the old refresh token: the new ones must be stored.
    // A data-key rotation that committed while the provider answered retired the sealing
    // version (409 `data_key_changed`): seal again under the active one.
    let mut sealing = sealing;
    let mut tries = 0;
    loop {
        match state
            .store
            .put_integration_token(actor, &record(&sealing))
            .await
        {
            Err(keygate_storage::StorageError::Conflict("data_key_version")) if tries < 3 => {
                tries += 1;
                // the active version, read from the database
                sealing = match state.keyring.dek(actor, user, None).await {
                    Ok(d) => d,
                    // a password vault that locked meanwhile: the new tokens cannot be
                    // sealed; recorded as a failed attempt, retried later
                    Err(e) if e.code() == "vault_locked" => {
                        return retry("vault_locked after a data-key rotation".into()).await
                    }
                    Err(e) => return Err(e),
                };
            }
            r => break r?,
        }
    }
    if integ.status != "active" || integ.last_error.is_some() {
        state
            .store
            .set_integration_status(actor, user, integ.id, "active", None, now)
            .await?;
    }
    audit(
        state,
        user,
        integ.id,
        "token_refresh",
        true,
        tr.refresh_token
            .is_some()
            .then(|| "refresh token rotated".to_string()),
    )
    .await?;
    Ok(RefreshOutcome::Refreshed)
}

async fn audit(
    state: &AppState,
    user: Uuid,
    integration: Uuid,
    action: &str,
    success: bool,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let system = Caller::system();
    let mut ev = event(
        "integration",
        action,
        &system,
        Some(user),
        &RequestMeta::default(),
    );
    ev.success = success;
    ev.reason = reason;
    ev.metadata = Json(serde_json::json!({"integration_id": integration}));
    state.recorder.record(vec![ev], vec![]).await
}

/// The soonest a token is refreshed again after a refresh.
pub const MIN_REFRESH_INTERVAL: chrono::Duration = chrono::Duration::minutes(1);

/// How long one pass goes on starting refreshes: token endpoints that answer slowly (up to
/// the request timeout each) cannot hold up the job runner's other jobs for longer.
const PASS_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Tells the owner's (and the platform's) webhooks that `i` needs consent: once per time
/// it came to need it (`i.updated_at`, when the status was set), and at most once in
/// `REMINDER_COOL_DOWN` (20 h) per integration, claimed like a reminder across instances.
/// An owner who sets it active again (an edit, new tokens) and refreshes, over and over,
/// cannot turn each round into deliveries; a notice the cool-down holds back is sent by
/// the reminders job once it allows ([`send_held_reconsent_notices`]).
async fn notify_reconsent(
    state: &AppState,
    i: &IntegrationRecord,
    error: &str,
    now: DbTime,
) -> Result<(), ApiError> {
    let once = crate::webhooks::Once {
        key: format!("reconsent:{}:{}", i.id, i.updated_at.micros()),
        subject_kind: "integration",
        subject_id: i.id,
        user: Some(i.user_id),
        event_type: "integration.needs_reconsent",
        data: serde_json::json!({"integration_id": i.id, "provider": i.provider, "error": error}),
        due: None,
    };
    if crate::webhooks::queue_once(state, once, now).await? {
        state.jobs.wake();
    }
    Ok(())
}

/// Sends the `integration.needs_reconsent` notices a cool-down held back (up to 100 a
/// pass; each still under its cool-down waits for a later pass).
pub async fn send_held_reconsent_notices(state: &AppState, now: DbTime) -> Result<(), ApiError> {
    for i in state
        .store
        .integrations_awaiting_reconsent_notice(100)
        .await?
    {
        let error = i
            .last_error
            .clone()
            .unwrap_or_else(|| "invalid_grant".into());
        // claimed no earlier than the status change it answers (a pass's `now` may be
        // older), or the integration would stay listed as awaiting its notice
        notify_reconsent(state, &i, &error, now.max(i.updated_at)).await?;
    }
    Ok(())
}

/// Refreshes started at once within a pass: a token endpoint that hangs holds one of
/// them for its timeout, not the pass.
const PARALLEL_REFRESHES: usize = 8;

/// Refreshes of one user's integrations started in one pass: a user whose token endpoints
/// hang (or whose tokens are always due, expiring in 1970) takes at most this many of a
/// pass's slots, and the rest are left for the next pass.
const REFRESHES_PER_USER_PER_PASS: usize = 4;

/// Refreshes every token that expires within [`REFRESH_AHEAD`] and is due for an attempt,
/// soonest expiry first, page by page (a keyset cursor: tokens that keep failing cannot
/// fill every page), until none is left or [`PASS_BUDGET`] is spent;
/// [`PARALLEL_REFRESHES`] at a time, at most [`REFRESHES_PER_USER_PER_PASS`] per user.
/// Each refresh reads the clock when it starts. A refreshed token is not due again for
/// [`MIN_REFRESH_INTERVAL`], a failed one until its backoff, so no integration takes
/// every pass's slots and leaves the others to expire.
pub async fn refresh_due(state: &AppState, now: DbTime) -> Result<usize, ApiError> {
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let mut after = None;
    let mut n = 0;
    let mut per_user: std::collections::HashMap<Uuid, usize> = Default::default();
    loop {
        let due = state
            .store
            .tokens_to_refresh(DbTime::new(now.0 + REFRESH_AHEAD), now, after, 50)
            .await?;
        let Some(last) = due.last() else {
            return Ok(n);
        };
        after = Some((last.expires_at.unwrap_or(now), last.integration_id));
        let mine = due.into_iter().filter(|t| {
            let taken = per_user.entry(t.user_id).or_default();
            *taken += 1;
            *taken <= REFRESHES_PER_USER_PER_PASS
        });
        let done: Vec<Result<usize, ApiError>> = futures::stream::iter(mine)
            .map(|t| async move {
                if started.elapsed() > PASS_BUDGET {
                    return Ok(0);
                }
                refresh_one(state, &t, DbTime::now().max(now)).await
            })
            .buffer_unordered(PARALLEL_REFRESHES)
            .collect()
            .await;
        for r in done {
            n += r?;
        }
        if started.elapsed() > PASS_BUDGET {
            return Ok(n);
        }
    }
}

async fn refresh_one(
    state: &AppState,
    t: &IntegrationTokenRecord,
    now: DbTime,
) -> Result<usize, ApiError> {
    let Some(i) = state.store.integration_by_id(t.integration_id).await? else {
        return Ok(0);
    };
    Ok(match refresh(state, Actor::service(), &i, t, now).await {
        Ok(RefreshOutcome::Refreshed) => 1,
        Ok(_) => 0,
        // another instance, or the owner, is refreshing it; or it was paused meanwhile
        Err(e) if matches!(e.code(), "refresh_in_progress" | "integration_disabled") => 0,
        Err(e) => {
            // any other failure (the owner's keys shredded, a broken record) backs off
            // like a failed request, rather than leave the token due on every pass
            tracing::warn!(integration = %i.id, code = e.code(), "token refresh failed");
            let attempts = t.refresh_attempts + 1;
            let failure = keygate_storage::RefreshFailure {
                user_id: i.user_id,
                integration_id: i.id,
                attempts,
                next_attempt_at: Some(DbTime::new(now.0 + retry_delay(attempts))),
                error: e.code().to_string(),
                now,
                refreshed_at: t.refreshed_at,
            };
            if let Err(e) = state
                .store
                .record_refresh_failure(Actor::service(), &failure)
                .await
            {
                tracing::warn!(integration = %i.id, error = %e, "token refresh failure not recorded");
            }
            0
        }
    })
}
