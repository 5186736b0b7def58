//! Webhook events: queueing ([`emit`]), signing ([`signature_header`]) and delivery with
//! retries ([`deliver_due`], run by the job runner).
//!
//! Each delivery is a POST of the JSON event with
//! `X-Keygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `X-Keygate-Event` and `X-Keygate-Delivery` (the delivery id, stable across retries, so
//! receivers can drop duplicates). Receivers should reject a `t` older than a few minutes
//! (replay). Failed attempts are retried with exponential backoff and jitter, up to
//! [`MAX_ATTEMPTS`], then marked `failed`. Only http(s) URLs are accepted.

use std::time::Duration;

use hmac::{Hmac, Mac};
use keygate_storage::{DbTime, DeliveryRecord};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Event types a webhook can subscribe to (an empty list means all).
pub const EVENT_TYPES: &[&str] = &[
    "credential.suspended",
    "rotation.reminder",
    "site_key.rotation_reminder",
    "integration.needs_reconsent",
    "connection.exchange_expiry_reminder",
    "credential.expiry_reminder",
];

/// The event type of `POST /v1/webhooks/{id}/test` (sent to that endpoint only).
pub const TEST_EVENT: &str = "webhook.test";

/// Attempts before a delivery is marked `failed`.
pub const MAX_ATTEMPTS: i32 = 8;

/// `t=<unix>,v1=<hex>` over `"<t>.<body>"`.
pub fn signature_header(secret: &SecretString, t: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `attempts + 1`: 10 s doubling per attempt, capped at 6 h, with
/// ±20 % jitter so a recovering receiver is not hit by every retry at once.
pub fn backoff(attempts: i32) -> Duration {
    let base = 10u64.saturating_mul(1u64 << attempts.clamp(1, 20).saturating_sub(1));
    let capped = base.min(6 * 3600) as f64;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_millis((capped * jitter * 1000.0) as u64)
}

/// Checks a webhook URL: http or https with a host, at most 2000 characters.
pub fn check_url(u: &str) -> Result<(), &'static str> {
    if u.len() > 2000 {
        return Err("must be at most 2000 characters");
    }
    // the URL parser drops or escapes them, but the text is what is stored
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters");
    }
    let url = url::Url::parse(u).map_err(|_| "not a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs are allowed");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL needs a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed");
    }
    Ok(())
}

/// A reminder or notice sent at most once: its claim key in `sent_reminders`, what it is
/// about (`subject_kind`, `subject_id`; at most one per subject in 20 hours), the event,
/// and with `due` the date the subject must still have when it is claimed.
pub struct Once<'a> {
    pub key: String,
    pub subject_kind: &'a str,
    pub subject_id: Uuid,
    pub user: Option<Uuid>,
    pub event_type: &'a str,
    pub data: serde_json::Value,
    pub due: Option<DbTime>,
}

/// Claims `once` and, only if this call claimed it, queues its deliveries (one
/// transaction, `Store::claim_reminder`). True when queued now; the caller wakes the
/// deliverer (a job pass once for all it queued).
pub async fn queue_once(state: &AppState, once: Once<'_>, now: DbTime) -> Result<bool, ApiError> {
    let rows = deliveries_for(state, once.user, once.event_type, once.data, now).await?;
    Ok(state
        .store
        .claim_reminder(
            &once.key,
            once.subject_kind,
            once.subject_id,
            once.user,
            now,
            &rows,
            once.due,
        )
        .await?)
}

/// Deliveries of one event to every endpoint that wants it: the user's own, the
/// platform's, and `KEYGATE_WEBHOOK_URLS`.
pub async fn deliveries_for(
    state: &AppState,
    user: Option<Uuid>,
    event_type: &str,
    data: serde_json::Value,
    now: DbTime,
) -> Result<Vec<DeliveryRecord>, ApiError> {
    let event_id = Uuid::now_v7();
    let body = serde_json::json!({
        "id": event_id,
        "type": event_type,
        "created_at": now.0,
        "user_id": user,
        "data": data,
    })
    .to_string();
    let mut out = Vec::new();
    let row = |webhook_id: Option<Uuid>, owner: Option<Uuid>, url: &str| DeliveryRecord {
        id: Uuid::now_v7(),
        webhook_id,
        user_id: owner,
        url: url.to_string(),
        event_type: event_type.to_string(),
        payload: body.clone(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        claimed_until: None,
        last_status_code: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    };
    for w in state.store.webhooks_for(user).await? {
        if w.events.0.is_empty() || w.events.0.iter().any(|e| e == event_type) {
            out.push(row(Some(w.id), w.user_id, &w.url));
        }
    }
    for url in &state.config.webhook_urls {
        out.push(row(None, None, url));
    }
    Ok(out)
}

/// Queues `event_type` for every interested endpoint and wakes the delivery job.
pub async fn emit(
    state: &AppState,
    user: Option<Uuid>,
    event_type: &str,
    data: serde_json::Value,
) -> Result<(), ApiError> {
    let rows = deliveries_for(state, user, event_type, data, DbTime::now()).await?;
    if !rows.is_empty() {
        state.store.enqueue_deliveries(&rows).await?;
        state.jobs.wake();
    }
    Ok(())
}

fn secret_for(
    state: &AppState,
    d: &DeliveryRecord,
    hook: Option<&keygate_storage::WebhookRecord>,
) -> Result<SecretString, ApiError> {
    match hook {
        Some(w) => state
            .platform
            .open_webhook_secret(w.user_id, w.id, &w.secret_ct),
        None => state.config.webhook_secret.clone().ok_or_else(|| {
            ApiError::internal(format!("no KEYGATE_WEBHOOK_SECRET for delivery {}", d.id))
        }),
    }
}

/// Sends every due delivery once (claimed, so no other instance sends it too). Returns
/// how many were attempted.
///
/// `now` picks what is due; the claim and the next attempt count from the clock (never
/// before `now`): a caller's `now` may be minutes old (a job tick that waited for a slow
/// exchange), and a claim that ended before it was made would let another instance send
/// the same deliveries at once.
pub async fn deliver_due(state: &AppState, now: DbTime) -> Result<usize, ApiError> {
    let fresh = || DbTime::new(now.0.max(chrono::Utc::now()));
    let claim_until = DbTime::new(fresh().0 + chrono::Duration::minutes(2));
    let due = state
        .store
        .claim_due_deliveries(now, claim_until, 100)
        .await?;
    let n = due.len();
    let timeout = Duration::from_millis(state.config.webhook_timeout_ms);
    let sends = due.into_iter().map(|mut d| async move {
        let hook = match d.webhook_id {
            Some(id) => {
                state
                    .store
                    .webhook(keygate_storage::Actor::service(), d.user_id, id)
                    .await?
            }
            None => None,
        };
        if d.webhook_id.is_some() && hook.as_ref().is_none_or(|h| !h.is_enabled) {
            d.status = "failed".into();
            d.last_error = Some("endpoint disabled or deleted".into());
            state.store.finish_delivery(&d).await?;
            return Ok::<_, ApiError>(());
        }
        // a retry goes where the endpoint points now, not where it pointed when the event
        // was queued (a user who moved a leaking receiver expects nothing more to reach it)
        if let Some(h) = &hook {
            d.url = h.url.clone();
        }
        // a user's endpoint (one saved before keygate checked webhook URLs, or since taken
        // off the operator's list) reaches only public addresses; the operator's own
        // KEYGATE_WEBHOOK_URLS (no endpoint row) may be on a private network
        let operator = d.webhook_id.is_none();
        if !operator {
            if let Err(e) =
                crate::outbound::check_target(&state.config.allowed_private_hosts, &d.url)
            {
                d.status = "failed".into();
                d.last_error = Some(e);
                state.store.finish_delivery(&d).await?;
                return Ok(());
            }
        }
        // the operator's URL taken off KEYGATE_WEBHOOK_URLS since: no more attempts there
        if operator && !state.config.webhook_urls.contains(&d.url) {
            d.status = "failed".into();
            d.last_error = Some("no longer one of KEYGATE_WEBHOOK_URLS".into());
            state.store.finish_delivery(&d).await?;
            return Ok(());
        }
        let client = if operator {
            &state.operator_http
        } else {
            &state.http
        };
        // a delivery that cannot be signed ends failed, rather than stay claimed and be
        // claimed again every two minutes without end
        let secret = match secret_for(state, &d, hook.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(delivery = %d.id, error = %e, "webhook delivery cannot be signed");
                d.status = "failed".into();
                d.last_error = Some("cannot be signed (signing secret unavailable)".into());
                state.store.finish_delivery(&d).await?;
                return Ok(());
            }
        };
        let t = chrono::Utc::now().timestamp();
        let sig = signature_header(&secret, t, &d.payload);
        let res = client
            .post(&d.url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("user-agent", "keygate-webhooks/1")
            .header("x-keygate-signature", sig)
            .header("x-keygate-event", d.event_type.clone())
            .header("x-keygate-delivery", d.id.to_string())
            .body(d.payload.clone())
            .send()
            .await;
        d.attempts += 1;
        match res {
            Ok(r) if r.status().is_success() => {
                d.status = "delivered".into();
                d.last_status_code = Some(r.status().as_u16() as i32);
                d.last_error = None;
                d.delivered_at = Some(DbTime::now());
            }
            other => {
                match other {
                    Ok(r) => {
                        d.last_status_code = Some(r.status().as_u16() as i32);
                        d.last_error = Some(format!("receiver answered {}", r.status().as_u16()));
                    }
                    Err(e) => {
                        d.last_status_code = None;
                        d.last_error = Some(if e.is_timeout() {
                            "timed out".into()
                        } else if e.is_connect() {
                            "connection failed".into()
                        } else {
                            "request failed".into()
                        });
                    }
                }
                if d.attempts >= MAX_ATTEMPTS {
                    d.status = "failed".into();
                } else {
                    d.next_attempt_at = DbTime::new(
                        fresh().0
                            + chrono::Duration::from_std(backoff(d.attempts))
                                .unwrap_or(chrono::Duration::hours(6)),
                    );
                }
            }
        }
        state.store.finish_delivery(&d).await?;
        Ok(())
    });
    for r in futures::future::join_all(sends).await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "webhook delivery bookkeeping failed");
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_dot_body() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently (python hmac).
        let h = signature_header(&SecretString::from("secret"), 1_700_000_000, "{}");
        assert_eq!(
            h,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let a = backoff(1).as_secs_f64();
        assert!((8.0..=12.0).contains(&a), "{a}");
        let b = backoff(4).as_secs_f64();
        assert!((64.0..=96.0).contains(&b), "{b}");
        let c = backoff(30).as_secs_f64();
        assert!(c <= 6.0 * 3600.0 * 1.2, "{c}");
    }

    #[test]
    fn only_http_urls() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://user:pw@example.com").is_err());
        assert!(check_url("not a url").is_err());
    }
}
