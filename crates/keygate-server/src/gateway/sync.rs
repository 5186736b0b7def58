//! Calls keygate makes itself with a stored key: the key check (real permissions, IP
//! restriction, exchange-side expiry) and the balance sync. `POST
//! /v1/connections/{id}/sync` runs both on demand; the background job runs the same
//! function for every enabled connection.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::HeaderMap;
use keygate_exchanges::{Exchange, ExchangeId, KeyCheck, OutgoingRequest, PlannedRequest};
use keygate_policy::KeyStatus;
use keygate_storage::{Actor, ApiCallRecord, BalanceRecord, CallContext, DbTime};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use super::{forward, key_state, sign, upstream_of};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::AppPath;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

/// The exchange's report on the key, as stored on the connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyCheckView {
    pub can_read: bool,
    pub can_trade: bool,
    pub can_withdraw: bool,
    pub can_transfer: bool,
    pub ip_restricted: bool,
    /// When the exchange takes trading (or the key) away, if it says so.
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    /// `verified` or `failed`.
    pub verification_status: String,
    pub warnings: Vec<String>,
    pub key_check: Option<KeyCheckView>,
    /// Number of balances stored (assets with a non-zero total).
    pub balances: usize,
    /// Why the check or the sync failed, when it did.
    pub error: Option<String>,
    pub synced_at: chrono::DateTime<Utc>,
}

struct Called {
    status: u16,
    body: Bytes,
}

/// One signed internal request; the call is logged like a proxied one.
async fn internal_call(
    s: &AppState,
    actor: Actor,
    ctx: &CallContext,
    exchange: ExchangeId,
    planned: PlannedRequest,
    calls: &mut Vec<ApiCallRecord>,
) -> Result<Called, ApiError> {
    let (mut base, environment, mut host) =
        upstream_of(ctx, exchange, &s.config.allowed_upstreams)?;
    // One Binance key serves spot and USD-M; its permissions are reported by the spot API
    // (`/sapi/...`), which the futures host does not serve.
    if exchange == ExchangeId::Binanceusdm
        && ctx.connection.base_url.is_none()
        && planned.path.starts_with("/sapi/")
    {
        let hosts = keygate_exchanges::binance::Binance.hosts();
        if let Some(b) = match environment {
            keygate_exchanges::Environment::Production => Some(hosts.production),
            keygate_exchanges::Environment::Testnet => hosts.testnet,
        } {
            base = b.to_string();
            host = b.trim_start_matches("https://").to_string();
        }
    }
    let mut out = OutgoingRequest {
        method: planned.method.clone(),
        path: planned.path.to_string(),
        query: planned.query.map(str::to_owned),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let now = Utc::now();
    // the exchange's budget for this key, as for the calls bots make through the gateway
    // priced from the request before signing; checked, and taken from the pool the
    // instances share near a budget's end, just before it goes out
    let placed = super::upstream::charges(exchange.api(), ctx.credential.id, &host, &out);
    sign(s, &actor, ctx, exchange, environment, host, &mut out, now)
        .await?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "signing_failed",
                format!("the stored key cannot sign requests: {e}"),
            )
        })?;
    let held = |d: keygate_policy::Denial| ApiError::Status {
        status: StatusCode::from_u16(d.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
        code: d.code.as_str(),
        detail: d.detail,
        retry_after: d.retry_after_secs,
    };
    let mut ticket = s
        .gateway
        .upstream
        .check(&placed, ctx.credential.id, Utc::now())
        .map_err(held)?;
    s.gateway
        .upstream
        .take_shared(&s.store, &ticket, Utc::now())
        .await
        .map_err(held)?;
    let started = std::time::Instant::now();
    let r = forward::send(
        &s.gateway.http,
        &base,
        &out,
        ctx.connection.timeout_ms.max(100) as u64,
        1,
        &mut || {
            s.gateway
                .upstream
                .charge_retry(&placed, ctx.credential.id, &mut ticket)
        },
    )
    .await;
    let mut used = None;
    let (status, body, err) = match r {
        Ok(u) => {
            used = s
                .gateway
                .upstream
                .learn(
                    exchange.api(),
                    &placed,
                    ctx.credential.id,
                    (&out.method, &out.path),
                    u.status.as_u16(),
                    &u.headers,
                    Utc::now(),
                    &ticket,
                )
                .and_then(|rl| rl.spent())
                .map(|u| u.min(i64::MAX as u64) as i64);
            let err = (!u.status.is_success())
                .then(|| format!("exchange answered {}", u.status.as_u16()));
            (u.status.as_u16(), u.body, err)
        }
        Err(e) => (e.status().as_u16(), Bytes::new(), Some(e.to_string())),
    };
    calls.push(ApiCallRecord {
        id: Uuid::now_v7(),
        connection_id: ctx.connection.id,
        credential_id: ctx.credential.id,
        user_id: ctx.connection.user_id,
        method: out.method.as_str().to_string(),
        endpoint: out.path.clone(),
        class: "read".into(),
        decision: "allowed".into(),
        deny_code: None,
        status_code: Some(i32::from(status)),
        response_time_ms: Some(started.elapsed().as_millis().min(i32::MAX as u128) as i32),
        success: (200..300).contains(&status),
        error_message: err,
        rate_limit_remaining: None,
        rate_limit_reset: None,
        rate_limit_used: used,
        notional_usd_micros: 0,
        withdrawal_usd_micros: 0,
        ip_address: None,
        user_agent: Some("keygate-sync".into()),
        session_id: None,
        created_at: DbTime::now(),
        reserved: None,
    });
    Ok(Called { status, body })
}

fn usable(ctx: &CallContext) -> Result<(), ApiError> {
    let k = key_state(ctx);
    let ok = match k.status {
        KeyStatus::Active => true,
        KeyStatus::Rotating => k.grace_period_ends_at.is_some_and(|g| g > Utc::now()),
        _ => false,
    } && k.expires_at.is_none_or(|e| e > Utc::now());
    if ok {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "credential_not_usable",
            format!(
                "the credential is {}; it is not used for checks or syncs",
                ctx.credential.status
            ),
        ))
    }
}

/// Verifies the key and syncs balances for one connection; stores the outcome (warnings,
/// verification status, balances, health) and returns it. `audit_as` names who asked.
pub async fn sync_connection(
    s: &AppState,
    actor: Actor,
    user: Uuid,
    connection_id: Uuid,
    audit_as: &Caller,
    meta: &RequestMeta,
) -> Result<SyncReport, ApiError> {
    let now = Utc::now();
    let ctx = s
        .store
        .call_context(actor, user, connection_id, None, DbTime::from(now))
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))?;
    let exchange: ExchangeId = ctx
        .connection
        .exchange
        .parse()
        .map_err(|_| ApiError::internal("stored connection names an unknown exchange"))?;
    // a disabled connection signs nothing, checks and syncs included (the gateway refuses
    // its calls with the same code)
    if !ctx.connection.is_enabled {
        return Err(ApiError::conflict(
            "connection_disabled",
            "the connection is disabled; enable it to check or sync it",
        ));
    }
    usable(&ctx)?;
    let api = exchange.api();
    let mut calls = Vec::new();
    let mut error = None;

    let check = internal_call(
        s,
        actor,
        &ctx,
        exchange,
        api.key_check_request(),
        &mut calls,
    )
    .await?;
    let key_check: Option<KeyCheck> = if (200..300).contains(&check.status) {
        match api.parse_key_check(&check.body) {
            Ok(k) => Some(k),
            Err(e) => {
                error = Some(format!("key check answer could not be read: {e}"));
                None
            }
        }
    } else {
        let kind = api
            .classify_error(check.status, &check.body)
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        error = Some(format!(
            "key check failed: exchange answered {} ({kind})",
            check.status
        ));
        None
    };
    let mut warnings = key_check
        .as_ref()
        .map(|k| k.warnings.clone())
        .unwrap_or_default();
    if let Some(ms) = key_check.as_ref().and_then(|k| k.expires_at_ms) {
        if let Some(t) = Utc.timestamp_millis_opt(ms).single() {
            warnings.push(format!("exchange-side expiry at {}", t.to_rfc3339()));
        }
    }

    // KEYGATE_REFUSE_WITHDRAWAL_KEYS: a key that can withdraw is taken out of service
    // (suspended, audited, webhook) as soon as a check reports it. Transfer permission does
    // not count: some exchanges report it for every trading key (OKX), and a transfer
    // between one's own accounts moves nothing off the exchange.
    let refused = match &key_check {
        Some(k) if s.config.refuse_withdrawal_keys && k.can_withdraw => {
            let what = "withdrawal";
            crate::anomaly::suspend_credential(
                s,
                ctx.credential.user_id,
                ctx.credential.id,
                &format!(
                    "the exchange reports {what} permission on this key, which this keygate refuses (KEYGATE_REFUSE_WITHDRAWAL_KEYS); create a key without it"
                ),
                0,
                &["withdrawal_permission"],
            )
            .await?;
            warnings.push(format!(
                "credential suspended: {what} permission is refused on this keygate"
            ));
            true
        }
        _ => false,
    };

    let mut stored = 0;
    if key_check.is_some() && !refused {
        let bal =
            internal_call(s, actor, &ctx, exchange, api.balance_request(), &mut calls).await?;
        if (200..300).contains(&bal.status) {
            match api.parse_balances(&bal.body) {
                Ok(list) => {
                    let synced_at = DbTime::now();
                    let rows: Vec<BalanceRecord> = list
                        .into_iter()
                        .filter(|b| !b.total.is_zero())
                        .map(|b| {
                            let price = s.config.reference_prices.usd_price(&b.asset);
                            BalanceRecord {
                                id: Uuid::now_v7(),
                                connection_id: ctx.connection.id,
                                user_id: ctx.connection.user_id,
                                usd_value: price.map(|p| (p * b.total).round_dp(2).to_string()),
                                last_price: price.map(|p: Decimal| p.to_string()),
                                asset: b.asset,
                                account_type: b.account_type.unwrap_or_else(|| "spot".into()),
                                free: b.free.to_string(),
                                locked: b.locked.to_string(),
                                total: b.total.to_string(),
                                synced_at,
                            }
                        })
                        .collect();
                    stored = rows.len();
                    s.store
                        .replace_balances(actor, ctx.connection.user_id, ctx.connection.id, &rows)
                        .await?;
                }
                Err(e) => error = Some(format!("balances could not be read: {e}")),
            }
        } else {
            error = Some(format!(
                "balance sync failed: exchange answered {}",
                bal.status
            ));
        }
    }

    let status = if key_check.is_some() {
        "verified"
    } else {
        "failed"
    };
    let at = DbTime::now();
    s.store
        .record_verification(
            actor,
            ctx.connection.user_id,
            ctx.connection.id,
            status,
            key_check.is_some().then_some(&warnings[..]),
            at,
        )
        .await?;
    s.store
        .record_connection_health(
            actor,
            ctx.connection.user_id,
            ctx.connection.id,
            error.is_none(),
            error.as_deref(),
            at,
        )
        .await?;
    let mut ev = event(
        "connection",
        "sync",
        audit_as,
        Some(ctx.connection.user_id),
        meta,
    );
    ev.connection_id = Some(ctx.connection.id);
    ev.credential_id = Some(ctx.credential.id);
    ev.success = error.is_none();
    ev.reason = error.clone();
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "verification_status": status,
        "warnings": warnings,
        "balances": stored,
    }));
    s.recorder.record(vec![ev], calls).await?;
    Ok(SyncReport {
        verification_status: status.into(),
        warnings,
        key_check: key_check.map(|k| KeyCheckView {
            can_read: k.can_read,
            can_trade: k.can_trade,
            can_withdraw: k.can_withdraw,
            can_transfer: k.can_transfer,
            ip_restricted: k.ip_restricted,
            expires_at: k
                .expires_at_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        }),
        balances: stored,
        error,
        synced_at: at.0,
    })
}

/// Verify the key and sync balances now.
#[utoipa::path(post, path = "/v1/connections/{id}/sync", tag = "connections", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = SyncReport), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn sync_route(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<SyncReport>, ApiError> {
    let user = caller.user()?;
    Ok(Json(
        sync_connection(&s, caller.actor(), user, id, &caller, &meta).await?,
    ))
}

/// The background job: checks keys and syncs balances of connections not verified within
/// `KEYGATE_SYNC_INTERVAL_MINUTES`, a few per tick, and sends exchange-side expiry
/// reminders (30/14/7/1 days before, then overdue) like rotation reminders, once each.
pub async fn run_connection_sync(
    s: &AppState,
    now: DbTime,
    minutes: u32,
) -> Result<usize, ApiError> {
    if minutes == 0 {
        return Ok(0);
    }
    let before = DbTime::new(now.0 - chrono::Duration::minutes(i64::from(minutes)));
    let system = Caller::system();
    let mut done = 0;
    for (user, conn) in s.store.connections_due_for_sync(before, now, 20).await? {
        let report = match sync_connection(
            s,
            Actor::service(),
            user,
            conn,
            &system,
            &RequestMeta::default(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                // A suspended or revoked key is not checked; everything else is logged.
                if e.code() != "credential_not_usable" {
                    tracing::warn!(connection = %conn, error = %e, "connection sync failed");
                }
                continue;
            }
        };
        done += 1;
        let Some(expiry) = report.key_check.as_ref().and_then(|k| k.expires_at) else {
            continue;
        };
        let Some(stage) = crate::jobs::reminder_stage(DbTime::from(expiry), now) else {
            continue;
        };
        let once = crate::webhooks::Once {
            key: format!(
                "exchange_expiry:{conn}:{}:{stage}",
                DbTime::from(expiry).micros()
            ),
            subject_kind: "connection",
            subject_id: conn,
            user: Some(user),
            event_type: "connection.exchange_expiry_reminder",
            data: serde_json::json!({
                "connection_id": conn,
                "expires_at": expiry,
                "stage": stage,
                "why": "the exchange takes trading (or the key) away at this time, e.g. Binance keys without an IP whitelist",
            }),
            due: None,
        };
        if crate::webhooks::queue_once(s, once, now).await? {
            s.jobs.wake();
        }
    }
    Ok(done)
}
