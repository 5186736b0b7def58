//! The gateway: `ANY /v1/connections/{id}/proxy/{*path}`.
//!
//! authenticate (extractor) -> load connection, credential, generation and vault state in
//! one read -> strip the client's auth -> classify -> parse the intent -> gather counters
//! -> policy -> upstream rate-limit check -> decrypt -> sign -> forward -> record the call
//! and a usage audit event (group commit, before the response) -> answer with the
//! exchange's status, headers and body unchanged.
//!
//! Fail closed: an unknown exchange id, unparsable limits, a missing generation, a
//! request that cannot be parsed or signed, a counter store that does not answer: each is
//! a problem+json answer and nothing reaches the exchange.

mod context;
mod counters;
mod forward;
mod risk;
mod spending;
pub mod sync;
mod upstream;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, RequestIntent,
    SignContext,
};
use keygate_policy::{
    evaluate, scopes_for_connection, CallRequest, CapsElsewhere, ConnectionRates, Counters,
    Decision, Denial, DenyCode, KeyState, KeyStatus, Limits, Policy, PolicyApproved, ScopeSet,
    VaultState,
};
use keygate_storage::{ApiCallRecord, CallContext, DbTime};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::{problem_response, ApiError};
use crate::extract::AppPath;
use crate::recorder::{event, RequestMeta};
use crate::state::AppState;

pub use counters::CounterStore;
pub use forward::UpstreamError;
pub use upstream::UpstreamLimits;

/// Header a caller may set to sign with an older key generation during its grace period.
pub const GENERATION_HEADER: &str = "x-keygate-key-generation";

/// Gateway-wide state: request counters, upstream rate-limit tracking, health cache.
pub struct Gateway {
    /// The pooled upstream client (see `forward::client`).
    pub http: forward::HttpClient,
    pub counters: CounterStore,
    contexts: context::ContextCache,
    pub upstream: UpstreamLimits,
    risk: risk::RiskCache,
    spending: spending::Spending,
    health: parking_lot::Mutex<std::collections::HashMap<Uuid, (bool, Instant)>>,
}

impl Gateway {
    pub fn new(config: &Config, backend: keygate_storage::Backend) -> Result<Self, String> {
        Ok(Gateway {
            http: forward::client()?,
            counters: CounterStore::new(config, backend),
            contexts: context::ContextCache::new(std::time::Duration::from_millis(
                config.gateway_cache_ms,
            )),
            upstream: UpstreamLimits::new(matches!(backend, keygate_storage::Backend::Postgres)),
            risk: risk::RiskCache::default(),
            spending: spending::Spending::new(backend),
            health: Default::default(),
        })
    }

    /// Whether the connection's health row should be written now (state changed, or the
    /// last write is older than 30 s): keeps the hot path free of a write per call.
    fn health_due(&self, connection: Uuid, ok: bool) -> bool {
        let mut h = self.health.lock();
        let now = Instant::now();
        match h.get(&connection) {
            Some((last_ok, at)) if *last_ok == ok && now.duration_since(*at).as_secs() < 30 => {
                false
            }
            _ => {
                h.insert(connection, (ok, now));
                true
            }
        }
    }
}

/// A serving instance shares the exchange blocks it learns with the other instances on its
/// database, and takes on theirs, every [`upstream::SHARE_EVERY`].
pub fn share_upstream_blocks(s: AppState) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(upstream::SHARE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = s.gateway.upstream.share(&s.store).await {
                tracing::warn!(error = %e, "exchange blocks could not be shared with the other instances");
            }
        }
    });
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connections/{id}/proxy/{*path}", any(proxy))
        .route(
            "/v1/connections/{id}/sync",
            axum::routing::post(sync::sync_route),
        )
}

/// Request headers never forwarded: hop-by-hop, keygate's own, the caller's auth for
/// keygate, and anything that describes the caller's network path.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(n.starts_with("x-keygate-")
        || n.starts_with("proxy-")
        || n.starts_with("x-forwarded-")
        || matches!(
            n,
            "host"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
                | "authorization"
                | "cookie"
                | "forwarded"
                | "x-real-ip"
                | "accept-encoding"
                | "x-request-id"
                | "x-device-id"
                // would let an upstream that honours them run another method or path
                // than the one keygate classified and signed
                | "x-http-method-override"
                | "x-http-method"
                | "x-method-override"
                | "x-original-method"
                | "x-original-url"
                | "x-original-uri"
                | "x-rewrite-url"
                | "x-envoy-original-path"
        ))
}

/// An `Unknown` endpoint whose path says it moves funds (a non-GET call with "withdraw" or
/// "transfer" in its path) is taken as a withdrawal or transfer, for every exchange: a
/// connection that allows unknown endpoints must still not reach one past its scopes,
/// caps and address allowlist. Its request is then read as one, and refused when it
/// cannot be (fail closed). It still passes every gate of an unknown endpoint first
/// (`CallRequest::unclassified`): before, the upgrade let a broker's transfer to a
/// client's account through with the `transfer` scope alone, on a connection that does
/// not allow unknown endpoints.
fn funds_moving(class: EndpointClass, out: &OutgoingRequest) -> EndpointClass {
    if class != EndpointClass::Unknown || out.method == Method::GET {
        return class;
    }
    let path = out.path.to_ascii_lowercase();
    if path.contains("withdraw") {
        EndpointClass::Withdraw
    } else if path.contains("transfer") {
        EndpointClass::Transfer
    } else {
        class
    }
}

/// An unknown endpoint whose path, lower-cased, is a known one: an exchange that routes
/// without regard to case would run the known endpoint, unchecked on a connection that
/// allows unknown endpoints. Refused like a malformed request.
fn case_variant(
    api: &dyn keygate_exchanges::Exchange,
    class: EndpointClass,
    out: &OutgoingRequest,
) -> Option<String> {
    if class != EndpointClass::Unknown {
        return None;
    }
    let lower = out.path.to_ascii_lowercase();
    (lower != out.path && api.classify(&out.method, &lower) != EndpointClass::Unknown)
        .then(|| "the path differs from one of the exchange's known endpoints only in case".into())
}

/// Why keygate cannot be sure the exchange reads `out` the way keygate classified it, if
/// it cannot: the path (percent-decoded by the router) holds a `?`, `#`, `%`, `\`, a space
/// or control character, an empty segment or a dot segment (the exchange, or a proxy in
/// front of it, may route such a path elsewhere than keygate's classification assumed),
/// or the request has several `Content-Type` headers (keygate reads the first). Checked
/// for every exchange before policy, whatever the connection allows.
fn malformed(out: &OutgoingRequest) -> Option<String> {
    let path = out.path.as_str();
    let bad_byte = path
        .bytes()
        .find(|b| matches!(b, b'?' | b'#' | b'%' | b'\\' | b';') || !b.is_ascii_graphic());
    if let Some(b) = bad_byte {
        let shown = match b {
            b'?' | b'#' | b'%' | b'\\' | b';' => format!("'{}'", b as char),
            _ => format!("byte 0x{b:02x}"),
        };
        return Some(format!(
            "the path holds {shown} (after percent-decoding), which the exchange could read as another endpoint"
        ));
    }
    if let Some(rest) = path.strip_prefix('/').filter(|r| !r.is_empty()) {
        if rest
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Some(
                "the path has an empty, '.' or '..' segment, which the exchange could resolve to another endpoint".into(),
            );
        }
    }
    if out.headers.get_all(header::CONTENT_TYPE).iter().count() > 1 {
        return Some("the request has more than one Content-Type header".into());
    }
    // keygate reads the body as sent; one the exchange would first decompress is not
    // the one keygate checked
    if out
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Some("the request has a Content-Encoding: send the body uncompressed".into());
    }
    None
}

/// Everything recorded about one call, filled in as it proceeds.
struct CallLog {
    started: Instant,
    exchange: ExchangeId,
    class: EndpointClass,
    decision: &'static str,
    deny_code: Option<String>,
    status: u16,
    upstream_ms: Option<f64>,
    error: Option<String>,
    rate_remaining: Option<i64>,
    rate_used: Option<i64>,
    rate_reset: Option<DbTime>,
    notional_micros: i64,
    withdrawal_micros: i64,
    risk: risk::Risk,
    /// What the call reserved against the spend caps: its row settles it.
    reserved: Option<spending::Reserved>,
}

#[utoipa::path(get, path = "/v1/connections/{id}/proxy/{path}", tag = "gateway",
    description = "Forwards any method to the connection's exchange: policy-checked, signed with the stored key, logged. The exchange's answer comes back unchanged; keygate's own refusals are problem+json (403, 429 with Retry-After, 502, 504).",
    params(("id" = Uuid, Path), ("path" = String, Path, description = "Exchange path, e.g. api/v3/account")),
    responses((status = 200, description = "The exchange's response, unchanged"), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 429, body = crate::error::Problem), (status = 502, body = crate::error::Problem), (status = 503, body = crate::error::Problem), (status = 504, body = crate::error::Problem)))]
pub async fn proxy(
    state: State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    path: AppPath<(Uuid, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    // A call runs to its end in its own task, even if the client hangs up: once it is
    // forwarded, its row and usage event are written and its spend stays counted
    // (dropping the handler mid-call would leave the exchange's answer unrecorded).
    // Boxed: the call's future is large, and a task moves its future in when spawned and
    // overwrites it with the output when done; a box makes both moves a pointer's.
    tokio::spawn(Box::pin(proxy_call(state, caller, meta, path, req)))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "gateway call task failed");
            Err(ApiError::internal("the gateway call failed"))
        })
}

async fn proxy_call(
    State(s): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    AppPath((id, path)): AppPath<(Uuid, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let user = caller.user()?;
    let (parts, body) = req.into_parts();
    let pin = match parts.headers.get(GENERATION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .filter(|g| *g > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_key_generation",
                        format!("{GENERATION_HEADER} must be a positive integer"),
                    )
                })?,
        ),
    };
    let body = axum::body::to_bytes(body, s.config.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {} bytes", s.config.max_body_bytes),
            )
        })?;
    // the call's time is read once the body is in: a body sent slowly must not let a key
    // sign after its expiry or grace end with the time its headers came at (and again
    // after a wait for the spent totals, `decide`)
    let mut now = Utc::now();
    let prepared = s
        .gateway
        .contexts
        .get(
            &s.store,
            &s.config.allowed_upstreams,
            caller.actor(),
            user,
            id,
            pin,
            DbTime::from(now),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))?;
    let ctx: &CallContext = &prepared.ctx;
    let exchange: ExchangeId = ctx
        .connection
        .exchange
        .parse()
        .map_err(|_| ApiError::internal("stored connection names an unknown exchange"))?;
    let api = exchange.api();
    // where the call would go: a base_url no longer allowed, or a testnet the exchange
    // lacks, is refused here, before policy reserves or scores anything
    let (base, environment, host) = match &prepared.upstream {
        Some(u) => u.clone(),
        None => upstream_of(ctx, exchange, &s.config.allowed_upstreams)?,
    };

    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter() {
        if forwardable(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    let mut out = OutgoingRequest {
        method: parts.method.clone(),
        path: format!("/{}", path.trim_start_matches('/')),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    api.strip_auth(&mut out);
    let classified = api.classify(&out.method, &out.path);
    let class = funds_moving(classified, &out);
    let mut log = CallLog {
        started,
        exchange,
        class,
        decision: "denied",
        deny_code: None,
        status: 0,
        upstream_ms: None,
        error: None,
        rate_remaining: None,
        rate_used: None,
        rate_reset: None,
        notional_micros: 0,
        withdrawal_micros: 0,
        risk: risk::Risk::default(),
        reserved: None,
    };

    let decided = match malformed(&out).or_else(|| case_variant(api, class, &out)) {
        Some(detail) => Err(Denial {
            code: DenyCode::RequestMalformed,
            detail,
            retry_after_secs: None,
            status: DenyCode::RequestMalformed.status(),
        }),
        None => {
            let unclassified = classified == EndpointClass::Unknown;
            decide(
                &s,
                &prepared,
                exchange,
                &out,
                class,
                unclassified,
                &meta,
                &mut now,
            )
            .await
        }
    };
    let approved = match decided {
        Ok((a, reserved)) => {
            // from here every way out records a row that settles it, or gives it back
            log.reserved = reserved;
            a
        }
        Err(denial) => {
            // A denied call is still a use worth scoring (denial streaks, withdrawal tries)
            // unless the key is already out of service.
            if !matches!(
                denial.code,
                DenyCode::CredentialSuspended
                    | DenyCode::CredentialRevoked
                    | DenyCode::CredentialExpired
                    | DenyCode::CredentialPending
                    | DenyCode::ConnectionDisabled
            ) {
                log.risk = assess(&s, ctx, &meta, class == EndpointClass::Withdraw, true).await?;
            }
            return deny(&s, &caller, &meta, ctx, &out, log, denial).await;
        }
    };
    if approved.may_sign() {
        log.risk = assess(&s, ctx, &meta, class == EndpointClass::Withdraw, false).await?;
        if log.risk.suspended {
            let d = Denial {
                code: DenyCode::CredentialSuspended,
                detail: format!(
                    "the credential was suspended by anomaly detection (score {}: {}); its owner must reactivate it",
                    log.risk.score,
                    log.risk.reasons.join(", ")
                ),
                retry_after_secs: None,
                status: 403,
            };
            return deny(&s, &caller, &meta, ctx, &out, log, d).await;
        }
    }
    // Every call the exchange counts, public ones too: Binance weighs public calls against
    // the same IP budget, and its 418 ban follows 429s whoever sent them. Priced from the
    // caller's request; checked below, just before it goes out, so calls reach the
    // exchange in the order they were charged as near as can be.
    let placed = upstream::charges(api, ctx.credential.id, &host, &out);

    if approved.may_sign() {
        if let Err(e) = sign(
            &s,
            &caller.actor(),
            ctx,
            exchange,
            environment,
            host,
            &mut out,
            now,
        )
        .await?
        {
            log.decision = "error";
            log.status = 422;
            log.deny_code = Some("signing_failed".into());
            log.error = Some(e.to_string());
            finish(&s, &caller, &meta, ctx, &out, log, None).await?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "signing_failed",
                format!("the request could not be signed with this credential: {e}"),
            ));
        }
    }

    let mut ticket = match s
        .gateway
        .upstream
        .check(&placed, ctx.credential.id, Utc::now())
    {
        Ok(t) => t,
        Err(d) => return deny(&s, &caller, &meta, ctx, &out, log, d).await,
    };
    if let Err(d) = s
        .gateway
        .upstream
        .take_shared(&s.store, &ticket, Utc::now())
        .await
    {
        return deny(&s, &caller, &meta, ctx, &out, log, d).await;
    }
    log.notional_micros = micros(approved.volume_usd());
    log.withdrawal_micros = micros(approved.withdrawal_usd());
    // going out: from here the reservation is never given back but by the call's row
    if let Some(r) = log.reserved.as_mut() {
        r.going_out();
    }
    let retry_ok = matches!(class, EndpointClass::Read | EndpointClass::Public)
        && matches!(out.method, Method::GET | Method::HEAD);
    let result = forward::send(
        &s.gateway.http,
        &base,
        &out,
        ctx.connection.timeout_ms.max(100) as u64,
        if retry_ok {
            ctx.connection.max_retries.clamp(0, 5) as u32
        } else {
            0
        },
        // each retry is another call the exchange counts: charged, or not sent
        &mut || {
            s.gateway
                .upstream
                .charge_retry(&placed, ctx.credential.id, &mut ticket)
        },
    )
    .await;
    log.decision = "allowed";
    let response = match result {
        Ok(up) => {
            log.upstream_ms = Some(up.elapsed.as_secs_f64() * 1000.0);
            log.status = up.status.as_u16();
            let learned = s.gateway.upstream.learn(
                api,
                &placed,
                ctx.credential.id,
                (&out.method, &out.path),
                up.status.as_u16(),
                &up.headers,
                // when its answer came (a Retry-After or a countdown counts from then)
                Utc::now(),
                &ticket,
            );
            if let Some(rl) = learned {
                log.rate_remaining = rl.left().map(|r| r.min(i64::MAX as u64) as i64);
                log.rate_used = rl.spent().map(|u| u.min(i64::MAX as u64) as i64);
                log.rate_reset = rl
                    .reset_at_ms
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                    .map(DbTime::from);
            }
            if !up.status.is_success() {
                log.error = api
                    .classify_error(up.status.as_u16(), &up.body)
                    .map(|k| format!("exchange error: {}", serde_plain(&k)))
                    .or_else(|| Some(format!("exchange answered {}", up.status.as_u16())));
            }
            let mut resp = Response::new(Body::from(up.body));
            *resp.status_mut() = up.status;
            for (k, v) in up.headers.iter() {
                if forward::passes_back(k) {
                    resp.headers_mut().append(k.clone(), v.clone());
                }
            }
            resp
        }
        Err(e) => {
            log.status = e.status().as_u16();
            log.error = Some(e.to_string());
            e.into_api_error().into_response()
        }
    };
    let ok = log.status < 500 && log.status != 0;
    // a row that fails to commit leaves the call's reservation counted
    finish(&s, &caller, &meta, ctx, &out, log, None).await?;
    if s.gateway.health_due(ctx.connection.id, ok) {
        let store = s.store.clone();
        let (uid, cid) = (ctx.connection.user_id, ctx.connection.id);
        let err = (!ok).then(|| "exchange unreachable or failing".to_string());
        tokio::spawn(async move {
            let _ = store
                .record_connection_health(
                    keygate_storage::Actor::service(),
                    uid,
                    cid,
                    ok,
                    err.as_deref(),
                    DbTime::now(),
                )
                .await;
        });
    }
    Ok(response)
}

/// Opens the generation's secrets (plaintext lives only in this call) and signs `out`.
/// The outer error is keygate's (vault locked, shredded, storage); the inner one says the
/// stored key cannot sign this request.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn sign(
    s: &AppState,
    actor: &keygate_storage::Actor,
    ctx: &CallContext,
    exchange: ExchangeId,
    environment: Environment,
    host: String,
    out: &mut OutgoingRequest,
    now: DateTime<Utc>,
) -> Result<Result<(), keygate_exchanges::SignError>, ApiError> {
    let secret = ctx
        .secret
        .as_ref()
        .ok_or_else(|| ApiError::internal("credential generation vanished"))?;
    let creds: ApiCredentials = crate::secrets::open_secrets(&s.keyring, *actor, secret)
        .await?
        .into();
    let nonce = if exchange == ExchangeId::Kraken {
        s.store
            .next_nonce(*actor, secret.id, now.timestamp_millis())
            .await? as u64
    } else {
        0
    };
    let sign_ctx = SignContext {
        now_ms: now.timestamp_millis(),
        nonce,
        random_nonce: rand::random(),
        environment,
        host,
        recv_window_ms: None,
    };
    Ok(exchange.api().sign(out, &creds, &sign_ctx))
}

/// Scheme + host of the connection's upstream, and the host (with a non-default port) that
/// signatures bind (Coinbase's JWT `uri`).
pub(crate) fn upstream_of(
    ctx: &CallContext,
    exchange: ExchangeId,
    allowed_upstreams: &[String],
) -> Result<(String, Environment, String), ApiError> {
    let environment = match ctx.credential.environment.as_str() {
        "testnet" => Environment::Testnet,
        _ => Environment::Production,
    };
    let base = base_url(ctx, exchange, environment, allowed_upstreams)?;
    let host = url::Url::parse(&base)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .ok_or_else(|| ApiError::internal("connection base URL has no host"))?;
    Ok((base, environment, host))
}

/// Scores this use when due (see `risk.rs`): on the call, in the background, or not at
/// all (the credential's last score).
async fn assess(
    s: &AppState,
    ctx: &CallContext,
    meta: &RequestMeta,
    withdrawal: bool,
    denied: bool,
) -> Result<risk::Risk, ApiError> {
    let cred = ctx.credential.id;
    let user = ctx.connection.user_id;
    match s
        .gateway
        .risk
        .due(cred, meta.ip.as_deref(), withdrawal, denied)
    {
        risk::Due::No => Ok(s.gateway.risk.last(cred)),
        risk::Due::Inline => {
            let r = score_use(s, user, cred, meta.ip.clone(), withdrawal)
                .await
                .inspect_err(|_| s.gateway.risk.failed_inline(cred, meta.ip.as_deref()))?;
            s.gateway.risk.store(cred, &r);
            Ok(r)
        }
        risk::Due::Background => {
            let (state, ip) = (s.clone(), meta.ip.clone());
            tokio::spawn(async move {
                use futures::FutureExt;
                // a panic must not leave the credential marked "refresh running" forever
                let r = std::panic::AssertUnwindSafe(score_use(&state, user, cred, ip, withdrawal))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(ApiError::internal("anomaly scoring panicked")));
                if let Err(e) = &r {
                    let why = match e {
                        ApiError::Internal(cause) => cause.as_str(),
                        other => other.code(),
                    };
                    tracing::warn!(credential = %cred, error = why, "background anomaly scoring failed");
                }
                state.gateway.risk.finished(cred, r.as_ref().ok());
            });
            Ok(s.gateway.risk.last(cred))
        }
    }
}

async fn score_use(
    s: &AppState,
    user: Uuid,
    cred: Uuid,
    ip: Option<String>,
    withdrawal: bool,
) -> Result<risk::Risk, ApiError> {
    let a = crate::anomaly::assess(
        s,
        user,
        cred,
        crate::anomaly::AssessInput {
            ip,
            is_withdrawal: withdrawal,
            now: None,
        },
    )
    .await?;
    Ok(risk::Risk {
        score: a.score,
        reasons: a.reasons.iter().map(|r| r.to_string()).collect(),
        suspended: a.suspended,
    })
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// USD micros as the ledger counts them: within `0..=MAX_SPEND_MICROS` (an absurd amount a
/// client sent counts as the most there is, never as nothing, and never overflows).
fn micros(usd: Option<Decimal>) -> i64 {
    let max = keygate_storage::MAX_SPEND_MICROS;
    match usd {
        Some(v) if v > Decimal::ZERO => v
            .checked_mul(Decimal::from(1_000_000))
            .and_then(|m| m.round().to_i64())
            .map_or(max, |m| m.min(max)),
        _ => 0,
    }
}

/// The connection's `base_url` (still allowed: `allowed_upstreams`), else the exchange's
/// host for the credential's environment.
fn base_url(
    ctx: &CallContext,
    ex: ExchangeId,
    env: Environment,
    allowed_upstreams: &[String],
) -> Result<String, ApiError> {
    if let Some(b) = ctx.connection.base_url.as_deref() {
        crate::routes::connections::base_url_allowed(allowed_upstreams, ex, b).map_err(|e| {
            ApiError::forbidden(
                "upstream_not_allowed",
                format!(
                    "this connection's base_url is no longer allowed ({e}); edit the connection"
                ),
            )
        })?;
        return Ok(b.trim_end_matches('/').to_string());
    }
    let hosts = ex.api().hosts();
    match env {
        Environment::Production => Ok(hosts.production.to_string()),
        Environment::Testnet => hosts.testnet.map(str::to_string).ok_or_else(|| {
            ApiError::forbidden(
                "testnet_unavailable",
                format!("{ex} has no testnet; this credential cannot be used"),
            )
        }),
    }
}

/// Gathers the facts and asks policy. Errors are denials (never forwarded).
#[allow(clippy::too_many_arguments)]
async fn decide(
    s: &AppState,
    prepared: &context::Prepared,
    exchange: ExchangeId,
    out: &OutgoingRequest,
    class: EndpointClass,
    // the exchange module does not know the endpoint (`class` may be what `funds_moving`
    // took it for)
    unclassified: bool,
    meta: &RequestMeta,
    // the call's time; moved on after a wait for the spent totals
    at: &mut DateTime<Utc>,
) -> Result<(PolicyApproved, Option<spending::Reserved>), Denial> {
    let mut now = *at;
    let ctx = &prepared.ctx;
    let denial = |code: DenyCode, detail: String| Denial {
        code,
        detail,
        retry_after_secs: None,
        status: code.status(),
    };
    if !ctx.connection.is_enabled {
        return Err(denial(
            DenyCode::ConnectionDisabled,
            "this connection is disabled".into(),
        ));
    }
    if class == EndpointClass::Withdraw && s.config.refuse_withdrawal_keys {
        return Err(denial(
            DenyCode::ScopeDenied,
            "withdrawals are refused on this keygate (KEYGATE_REFUSE_WITHDRAWAL_KEYS)".into(),
        ));
    }
    let intent = match class {
        EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer => {
            match exchange.api().parse_intent(class, out) {
                Ok(i) => i,
                Err(e) if class == EndpointClass::Trade => {
                    return Err(denial(
                        DenyCode::OrderUnparsable,
                        format!("the order could not be read ({e}); refusing to forward it"),
                    ))
                }
                Err(e) if class == EndpointClass::Withdraw => {
                    return Err(denial(
                        DenyCode::WithdrawalUnparsable,
                        format!("the withdrawal could not be read ({e}); refusing to forward it"),
                    ))
                }
                Err(e) => {
                    return Err(denial(
                        DenyCode::TransferUnparsable,
                        format!("the transfer could not be read ({e}); refusing to forward it"),
                    ))
                }
            }
        }
        _ => RequestIntent::None,
    };
    let (limits, mut connection_rates) = prepared
        .limits
        .clone()
        .map_err(|d| denial(DenyCode::CountersUnavailable, d))?;
    let scopes = prepared.scopes.clone();
    let key = key_state(ctx);
    let vault = match &ctx.user_key {
        Some(k) if k.protection == "password" => match &ctx.vault_session {
            Some(sess) if sess.dek_version == k.version && sess.expires_at.0 > now => {
                VaultState::Unlocked
            }
            _ => VaultState::Locked,
        },
        _ => VaultState::NotPasswordProtected,
    };
    let client_ip: IpAddr = meta
        .ip
        .as_deref()
        .and_then(|i| i.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let request = CallRequest {
        class,
        intent,
        client_ip,
        path: out.path.clone(),
        writes: !matches!(out.method, Method::GET | Method::HEAD),
        unclassified,
    };
    let mut counters = Counters::default();
    let public = class == EndpointClass::Public && request.intent == RequestIntent::None;
    let unavailable = |e: keygate_storage::StorageError| {
        tracing::error!(error = %e, "spent totals unavailable");
        denial(
            DenyCode::CountersUnavailable,
            "spent totals are unavailable; refusing rather than guessing".into(),
        )
    };
    let mut check = None;
    // a cap on another connection of the key counts this call too: its amounts must be
    // known (policy), and it is reserved while under way like a capped one, or that cap's
    // check would not see it
    let caps_elsewhere = prepared.sibling_caps;
    if !public {
        // the key's caps count its calls through every connection, the connection's own
        // caps only the calls made through it
        let key_capped = limits.max_requests_per_minute.is_some()
            || limits.max_requests_per_hour.is_some()
            || limits.max_requests_per_day.is_some();
        // The connection's first: a call its own cap refuses is not counted against the
        // key, or a bot retrying on one connection would use up the others' share.
        let scopes = [
            connection_rates
                .capped()
                .then_some(counters::Scope::Connection(ctx.connection.id)),
            key_capped.then_some(counters::Scope::Credential(ctx.credential.id)),
        ];
        for scope in scopes.into_iter().flatten() {
            let counted = s
                .gateway
                .counters
                .bump(&s.store, &[scope], now)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "request counters unavailable");
                    denial(
                        DenyCode::CountersUnavailable,
                        "request counters are unavailable; refusing rather than guessing".into(),
                    )
                })?;
            // counts including this call; policy takes them without it
            let Some(&[m, h, d]) = counted.first() else {
                return Err(denial(
                    DenyCode::CountersUnavailable,
                    "request counters answered no count; refusing rather than guessing".into(),
                ));
            };
            let before = (
                m.saturating_sub(1),
                h.saturating_sub(1),
                d.saturating_sub(1),
            );
            match scope {
                counters::Scope::Credential(_) => {
                    (
                        counters.requests_this_minute,
                        counters.requests_this_hour,
                        counters.requests_today,
                    ) = before;
                }
                counters::Scope::Connection(_) => {
                    (
                        connection_rates.this_minute,
                        connection_rates.this_hour,
                        connection_rates.today,
                    ) = before;
                    if connection_rates.exceeded_by([m, h, d]) {
                        break;
                    }
                }
            }
        }
        let (volume_capped, withdrawals_capped) = limits.spend_caps();
        let capped = match class {
            EndpointClass::Trade => volume_capped || caps_elsewhere.volume,
            EndpointClass::Withdraw => withdrawals_capped || caps_elsewhere.withdrawals,
            _ => false,
        };
        if capped {
            // from reading the totals (calls under way on any instance included) until
            // this call's amounts are reserved or it is refused (`spending.rs`)
            // waited for as long as the database's lock is (5 s), then refused
            let turn = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                s.gateway.spending.lock(ctx.credential.id),
            )
            .await
            .map_err(|_| {
                denial(
                    DenyCode::CountersUnavailable,
                    "the spent totals were not free within 5 s; refusing rather than guessing"
                        .into(),
                )
            })?;
            // the key's expiry, its rotation's grace and the unlock's end are judged, the
            // spend booked to a day, and the request signed, at the time the call goes
            // ahead, not before its wait (never earlier than what was checked before)
            now = now.max(Utc::now());
            *at = now;
            let c = s
                .store
                .begin_spend_check(ctx.credential.id, DbTime::from(now))
                .await
                .map_err(unavailable)?;
            let spent = c.totals();
            counters.daily_volume_usd = Decimal::new(spent.volume_today, 6);
            counters.withdrawals_today_usd = Decimal::new(spent.withdrawals_today, 6);
            counters.withdrawals_this_month_usd = Decimal::new(spent.withdrawals_this_month, 6);
            check = Some((turn, c));
        }
    }
    let policy = Policy {
        scopes,
        limits,
        key,
        vault,
        counters,
        connection_rates,
        prices: s.config.reference_prices.clone(),
        caps_elsewhere,
    };
    match evaluate(&policy, &request, now) {
        Decision::Allow(a) => {
            let reserved = match check {
                Some((_turn, c)) => {
                    let r = c
                        .reserve(
                            ctx.credential.user_id,
                            micros(a.volume_usd()),
                            micros(a.withdrawal_usd()),
                        )
                        .await
                        .map_err(unavailable)?;
                    Some(spending::Reserved::new(s.store.clone(), r))
                }
                None => None,
            };
            Ok((a, reserved))
        }
        Decision::Deny(d) => Err(d),
    }
}

fn parse_limits(v: &serde_json::Value) -> Result<Limits, String> {
    if v.is_null() {
        return Ok(Limits::default());
    }
    Limits::deserialize(v).map_err(|_| "stored limits cannot be read".to_string())
}

/// The stricter of the credential's and the connection's limits, except request caps:
/// the limits keep the credential's own (they count every call of the key), and the
/// connection's come apart (they count only the calls made through it).
fn effective_limits(ctx: &CallContext) -> Result<(Limits, ConnectionRates), String> {
    let a = parse_limits(&ctx.credential.limits.0)?;
    let b = parse_limits(&ctx.connection.limits.0)?;
    let merged = Limits {
        max_requests_per_minute: a.max_requests_per_minute,
        max_requests_per_hour: a.max_requests_per_hour,
        max_requests_per_day: a.max_requests_per_day,
        ..Limits::merge_stricter(&a, &b)
    };
    Ok((
        merged.spend_caps_within_the_ledger(),
        ConnectionRates::caps_of(&b),
    ))
}

/// Whether any other connection of the call's credential sets a daily volume cap, and a
/// withdrawal cap. Limits that cannot be read count as both (reserving is the safe side).
fn sibling_caps(ctx: &CallContext) -> CapsElsewhere {
    caps_among(ctx.sibling_limits.iter().map(|l| &l.0))
}

fn caps_among<'a>(limits: impl Iterator<Item = &'a serde_json::Value>) -> CapsElsewhere {
    limits.fold(CapsElsewhere::default(), |c, l| {
        let (volume, withdrawals) = parse_limits(l).map_or((true, true), |l| l.spend_caps());
        CapsElsewhere {
            volume: c.volume || volume,
            withdrawals: c.withdrawals || withdrawals,
        }
    })
}

fn scope_set(v: &[String]) -> ScopeSet {
    // Unknown names grant nothing.
    v.iter()
        .filter_map(|s| serde_json::from_value(serde_json::Value::String(s.clone())).ok())
        .collect()
}

fn effective_scopes(ctx: &CallContext) -> ScopeSet {
    let cred = scope_set(&ctx.credential.permissions.0);
    let conn = ctx.connection.scopes.as_ref().map(|s| scope_set(&s.0));
    scopes_for_connection(&cred, conn.as_ref())
}

fn key_state(ctx: &CallContext) -> KeyState {
    let expires_at = ctx.credential.expires_at.map(|t| t.0);
    let status = match ctx.credential.status.as_str() {
        "active" | "rotating" => match ctx.secret.as_ref().map(|s| s.status.as_str()) {
            Some("active") => KeyStatus::Active,
            Some("rotating") => KeyStatus::Rotating,
            _ => KeyStatus::Revoked,
        },
        "suspended" => KeyStatus::Suspended,
        "expired" => KeyStatus::Expired,
        "pending" => KeyStatus::Pending,
        _ => KeyStatus::Revoked,
    };
    KeyState {
        status,
        expires_at,
        grace_period_ends_at: ctx
            .secret
            .as_ref()
            .and_then(|s| s.grace_period_ends_at)
            .map(|t| t.0),
    }
}

/// Records a denial and answers with its problem (429 with `Retry-After` for rates).
async fn deny(
    s: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    ctx: &CallContext,
    out: &OutgoingRequest,
    mut log: CallLog,
    d: Denial,
) -> Result<Response, ApiError> {
    log.decision = "denied";
    log.status = d.status;
    log.deny_code = Some(d.code.as_str().to_string());
    log.error = Some(d.detail.clone());
    finish(s, caller, meta, ctx, out, log, Some(&d)).await?;
    let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = problem_response(status, d.code.as_str(), Some(d.detail.clone()), vec![]);
    if let Some(secs) = d.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
    }
    Ok(resp)
}

/// Writes the `api_calls` row and the usage audit event (group commit) and the metrics.
async fn finish(
    s: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    ctx: &CallContext,
    out: &OutgoingRequest,
    mut log: CallLog,
    denial: Option<&Denial>,
) -> Result<(), ApiError> {
    let elapsed_ms = log.started.elapsed().as_secs_f64() * 1000.0;
    let (reserved, went_out) = match log.reserved.take().and_then(spending::Reserved::settle) {
        Some((r, went_out)) => (Some(r), went_out),
        None => (None, false),
    };
    let now = DbTime::now();
    let endpoint: String = out.path.chars().take(300).collect();
    let call = ApiCallRecord {
        id: Uuid::now_v7(),
        connection_id: ctx.connection.id,
        credential_id: ctx.credential.id,
        user_id: ctx.connection.user_id,
        method: out.method.as_str().to_string(),
        endpoint: endpoint.clone(),
        class: log.class.as_str().to_string(),
        decision: log.decision.to_string(),
        deny_code: log.deny_code.clone(),
        status_code: Some(log.status as i32),
        response_time_ms: Some(elapsed_ms.round() as i32),
        success: log.decision == "allowed" && (200..300).contains(&log.status),
        error_message: log.error.clone(),
        rate_limit_remaining: log.rate_remaining,
        rate_limit_reset: log.rate_reset,
        rate_limit_used: log.rate_used,
        notional_usd_micros: log.notional_micros,
        withdrawal_usd_micros: log.withdrawal_micros,
        ip_address: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        session_id: caller.session_id,
        created_at: now,
        reserved,
    };
    let action = if denial.is_some() { "denied" } else { "use" };
    let mut ev = event(
        "gateway",
        action,
        caller,
        Some(ctx.connection.user_id),
        meta,
    );
    ev.credential_id = Some(ctx.credential.id);
    ev.connection_id = Some(ctx.connection.id);
    ev.endpoint = Some(endpoint);
    ev.http_method = Some(out.method.as_str().to_string());
    ev.status_code = Some(log.status as i32);
    ev.success = call.success;
    ev.reason = log.deny_code.clone();
    ev.risk_score = i32::from(log.risk.score);
    ev.risk_reasons = keygate_storage::Json(log.risk.reasons.clone());
    ev.metadata = keygate_storage::Json(serde_json::json!({
        "exchange": log.exchange.as_str(),
        "class": log.class.as_str(),
        "decision": log.decision,
    }));
    s.metrics.observe_proxied(
        log.exchange.as_str(),
        log.class.as_str(),
        log.decision,
        log.status,
        log.upstream_ms.map(|ms| ms / 1000.0),
    );
    // a call refused after its spend check, whose row would have given its reservation
    // back: if the database rolls the commit back, give it back here (a call that went
    // out stays counted, and so does every call of a commit whose outcome is unknown)
    let give_back = call
        .reserved
        .clone()
        .filter(|_| !went_out && call.decision != "allowed");
    let res = s.recorder.record_reporting(vec![ev], vec![call]).await;
    match (res, give_back) {
        (Ok(()), _) => Ok(()),
        (Err(u), Some(r)) if u.rolled_back => {
            if let Err(e) = s.store.give_back_spend(&r).await {
                tracing::warn!(error = %e, credential = %r.credential_id, "a refused call's spend reservation could not be given back; it stays counted");
            }
            Err(u.error)
        }
        (Err(u), _) => Err(u.error),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn out(path: &str, content_types: &[&str]) -> super::OutgoingRequest {
        let mut headers = super::HeaderMap::new();
        for ct in content_types {
            headers.append(
                super::header::CONTENT_TYPE,
                super::HeaderValue::from_str(ct).unwrap(),
            );
        }
        super::OutgoingRequest {
            method: super::Method::POST,
            path: path.into(),
            query: None,
            headers,
            body: Default::default(),
        }
    }

    /// Paths and headers the exchange could read otherwise than keygate does are refused
    /// before policy; ordinary exchange paths pass.
    #[test]
    fn requests_the_exchange_could_read_otherwise_are_malformed() {
        let form = ["application/x-www-form-urlencoded"];
        for ok in [
            "/api/v3/order",
            "/0/private/AddOrder",
            "/api/v3/brokerage/orders/historical/BTC-USD",
            "/api/v1/orders/client-order/a_b.c-1",
            "/",
        ] {
            assert_eq!(super::malformed(&out(ok, &form)), None, "{ok}");
        }
        for bad in [
            "/api/v1/hf/orders/sync?/cancel",
            "/api/v3/order#x",
            "/api/v5/trade/order;x=1",
            "/api/v3/%61ccount",
            "/api/v3\\order",
            "/api/v3/order ",
            "/api/v3/ord\ter",
            "/api/v3/ordér",
            "/api/v4/futures/usdt/dual_comp/positions/../../orders",
            "/api/v3/./order",
            "/api/v3//order",
            "/api/v3/order/",
        ] {
            assert!(super::malformed(&out(bad, &form)).is_some(), "{bad:?}");
        }
        assert!(super::malformed(&out(
            "/api/v3/order",
            &["application/x-www-form-urlencoded", "application/json"]
        ))
        .is_some());
        assert_eq!(super::malformed(&out("/api/v3/order", &[])), None);
    }

    /// Unknown non-GET endpoints that say they move funds count as withdrawals or transfers.
    #[test]
    fn unknown_endpoints_that_move_funds_are_not_unknown() {
        use super::EndpointClass as C;
        let req = |m: super::Method, p: &str| super::OutgoingRequest {
            method: m,
            ..out(p, &[])
        };
        let post = super::Method::POST;
        let cases = [
            (
                C::Unknown,
                req(post.clone(), "/api/v5/asset/Withdrawal"),
                C::Withdraw,
            ),
            (
                C::Unknown,
                req(post.clone(), "/v5/asset/transfer/inter-transfer"),
                C::Transfer,
            ),
            (
                C::Unknown,
                req(super::Method::GET, "/api/v5/asset/withdrawal-history"),
                C::Unknown,
            ),
            (
                C::Unknown,
                req(post.clone(), "/api/v5/trade/amend-order"),
                C::Unknown,
            ),
            (
                C::Read,
                req(post.clone(), "/api/v5/asset/withdrawal"),
                C::Read,
            ),
        ];
        for (class, r, want) in cases {
            assert_eq!(super::funds_moving(class, &r), want, "{}", r.path);
        }
    }

    /// A known endpoint written in another case is refused; unknown ones and known ones
    /// are not.
    #[test]
    fn known_endpoints_in_another_case_are_refused() {
        let okx = keygate_exchanges::ExchangeId::Okx.api();
        let case = |p: &str| {
            let r = out(p, &[]);
            super::case_variant(okx, okx.classify(&r.method, &r.path), &r)
        };
        assert!(case("/API/V5/TRADE/ORDER").is_some());
        assert!(case("/api/v5/Trade/Order").is_some());
        assert_eq!(case("/api/v5/trade/order"), None);
        assert_eq!(case("/api/v5/some/new-endpoint"), None);
        assert_eq!(case("/API/V5/SOME/NEW-ENDPOINT"), None);
    }

    /// Headers that would let an upstream run another method or path are not forwarded.
    #[test]
    fn method_and_url_overrides_are_not_forwarded() {
        for h in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-method",
            "x-original-url",
            "x-original-uri",
            "x-rewrite-url",
            "x-envoy-original-path",
        ] {
            assert!(
                !super::forwardable(&super::HeaderName::from_static(h)),
                "{h}"
            );
        }
        assert!(super::forwardable(&super::HeaderName::from_static(
            "x-mbx-apikey"
        )));
    }

    /// Which caps the key's other connections set; unreadable limits count as both.
    #[test]
    fn caps_among_the_other_connections() {
        let caps = |v: &[serde_json::Value]| {
            let c = super::caps_among(v.iter());
            (c.volume, c.withdrawals)
        };
        assert_eq!(caps(&[]), (false, false));
        assert_eq!(
            caps(&[json!(null), json!({"max_trade_usd": "10"})]),
            (false, false)
        );
        assert_eq!(
            caps(&[json!({"max_daily_volume_usd": "10"})]),
            (true, false)
        );
        assert_eq!(
            caps(&[json!(null), json!({"max_withdrawal_usd_per_month": "10"})]),
            (false, true)
        );
        assert!(caps(&[json!({"max_daily_volume_usd": 12})]).0);
        assert_eq!(caps(&[json!({"max_daily_volume_usd": "x"})]), (true, true));
    }
}
