//! Console page handlers. Reads and writes go through [`super::api`] (the API's own
//! handlers); nothing here touches the store except the session tables.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Timelike, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::session::{self, Session};
use super::{api, forbidden, render, render_status, ApiReply, Form};
use crate::state::AppState;

/// Request context every page needs: headers and the peer address.
pub struct Ctx {
    pub(super) headers: HeaderMap,
    pub(super) conn: Option<ConnectInfo<SocketAddr>>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Ctx {
            headers: parts.headers.clone(),
            conn: parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
        })
    }
}

impl Ctx {
    pub(super) async fn call(
        &self,
        s: &AppState,
        sess: &Session,
        m: Method,
        uri: &str,
        body: Option<Value>,
    ) -> ApiReply {
        api(s, sess, &self.headers, self.conn, m, uri, body).await
    }
    pub(super) async fn get(&self, s: &AppState, sess: &Session, uri: &str) -> ApiReply {
        self.call(s, sess, Method::GET, uri, None).await
    }
}

/// A page for signed-in users; others are sent to the sign-in page.
pub(super) async fn need(s: &AppState, c: &Ctx) -> Result<Session, Response> {
    session::current(s, &c.headers)
        .await
        .ok_or_else(|| Redirect::to("/ui/login").into_response())
}

/// Every POST: same origin first (so a cross-origin post changes nothing, signed in or
/// not), then a live session, then the form's CSRF token.
pub(super) async fn guard(s: &AppState, c: &Ctx, form: &Form) -> Result<Session, Response> {
    if !session::same_origin(s, &c.headers) {
        return Err(forbidden(None, "cross-origin request refused"));
    }
    let sess = session::current(s, &c.headers)
        .await
        .ok_or_else(|| Redirect::to("/ui/login").into_response())?;
    if !session::csrf_ok(&sess, form.get("csrf")) {
        return Err(forbidden(
            Some(&sess),
            "missing or invalid CSRF token; reload the page",
        ));
    }
    Ok(sess)
}

pub(super) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------- sign-in

pub async fn login_page(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = session::current(&s, &c.headers).await;
    if sess.is_some() {
        return see_other("/ui/");
    }
    render_status(StatusCode::OK, "login.html", None, json!({}))
}

fn link_refused() -> Response {
    render_status(
        StatusCode::FORBIDDEN,
        "login.html",
        None,
        json!({"error": "This sign-in link is invalid, expired or already used. Ask for a new one with `keygate login-link`."}),
    )
}

fn link_token_ok(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Opening a login link only asks to confirm: a GET uses nothing up. So a link scanner or
/// a chat preview cannot spend the link, and a link someone else sent cannot sign this
/// browser in to their account unasked (login CSRF): the page names the account, and the
/// sign-in is a same-origin POST.
pub async fn login_link(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    if !link_token_ok(&token) {
        return link_refused();
    }
    match s.store.peek_login_link(&session::hash(&token)).await {
        Ok(Some((user, admin))) => render_status(
            StatusCode::OK,
            "login_link.html",
            None,
            json!({"user": user.to_string(), "link_admin": admin}),
        ),
        Ok(None) => link_refused(),
        Err(e) => {
            tracing::error!(error = %e, "login link lookup failed");
            link_refused()
        }
    }
}

/// The confirmed sign-in: uses the link up and starts a session, ending any session this
/// browser had.
pub async fn login_link_confirm(
    State(s): State<AppState>,
    c: Ctx,
    Path(token): Path<String>,
) -> Response {
    if !session::same_origin(&s, &c.headers) {
        return forbidden(None, "cross-origin request refused");
    }
    if !link_token_ok(&token) {
        return link_refused();
    }
    let link = session::hash(&token);
    let (user, admin) = match s.store.peek_login_link(&link).await {
        Ok(Some(found)) => found,
        Ok(None) => return link_refused(),
        Err(e) => {
            tracing::error!(error = %e, "login link lookup failed");
            return link_refused();
        }
    };
    let (rec, cookie) = match session::prepare(
        &s,
        &c.headers,
        user,
        admin,
        None,
        None,
        Utc::now().timestamp(),
    ) {
        Ok(x) => x,
        Err(e) => return session_failed(e),
    };
    // the link is used up only together with the new session: a failure leaves it usable
    match s.store.consume_login_link_into_session(&link, &rec).await {
        Ok(true) => {
            end_current_session(&s, &c).await;
            to_console(cookie)
        }
        Ok(false) => link_refused(),
        Err(e) => session_failed(e),
    }
}

/// Ends the session this browser sends, if any: a new sign-in replaces it rather than
/// leaving it alive on the server.
async fn end_current_session(s: &AppState, c: &Ctx) {
    if let Some(old) = session::current(s, &c.headers).await {
        if let Err(e) = s.store.delete_ui_session(&old.id_hash).await {
            tracing::error!(error = %e, "ending the previous ui session failed");
        }
    }
}

/// Starts a session (ending no later than `not_after`, and when key `jwks_kid` leaves the
/// JWKS) and sends the browser to the console.
#[allow(clippy::too_many_arguments)]
async fn signed_in(
    s: &AppState,
    headers: &HeaderMap,
    user: Uuid,
    admin: bool,
    not_after: Option<DateTime<Utc>>,
    jwks_kid: Option<String>,
    issued_at: i64,
    opened_by: Option<Uuid>,
    signed_in_at: Option<i64>,
) -> Response {
    match session::start(
        s,
        headers,
        user,
        admin,
        not_after,
        jwks_kid,
        issued_at,
        opened_by,
        signed_in_at,
    )
    .await
    {
        Ok(cookie) => to_console(cookie),
        Err(e) => session_failed(e),
    }
}

/// The answer to a sign-in: the session cookie, and on to the console.
fn to_console(cookie: HeaderValue) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/ui/".parse().expect("static")),
        ],
    )
        .into_response()
}

fn session_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "ui session create failed");
    render_status(
        StatusCode::SERVICE_UNAVAILABLE,
        "error.html",
        None,
        json!({"title": "Sign-in failed", "detail": "could not create a session"}),
    )
}

pub async fn login_jwt(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    if !session::same_origin(&s, &c.headers) {
        return forbidden(None, "cross-origin request refused");
    }
    let form = Form::parse(&body);
    let token = form.text("token").unwrap_or_default();
    let err = |m: &str| {
        render_status(
            StatusCode::UNAUTHORIZED,
            "login.html",
            None,
            json!({"error": m}),
        )
    };
    match s.auth.verify_with_expiry(&token).await {
        Ok((caller, exp, iat)) if !caller.service && caller.user_id.is_some() => {
            // the session ends when the token does (verification allows clock-skew
            // leeway past `exp`; the session does not)
            match DateTime::<Utc>::from_timestamp(exp, 0).filter(|t| *t > Utc::now()) {
                Some(exp) => {
                    end_current_session(&s, &c).await;
                    signed_in(
                        &s,
                        &c.headers,
                        caller.user_id.expect("checked"),
                        caller.admin,
                        Some(exp),
                        s.auth.jwks_kid_of(&token),
                        // a token without `iat` counts as issued before any sign-out
                        iat.unwrap_or(i64::MIN),
                        Some(caller.sign_in),
                        caller.authenticated_at,
                    )
                    .await
                }
                None => err("token not accepted (invalid, expired or signed by an unknown key)"),
            }
        }
        Ok(_) => err("this token acts for no user; sign in with a user's token"),
        Err(_) => err("token not accepted (invalid, expired or signed by an unknown key)"),
    }
}

pub async fn logout(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = s.store.delete_ui_session(&sess.id_hash).await {
        tracing::error!(error = %e, "ui logout failed");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie(&s, &c.headers)),
            (header::LOCATION, "/ui/login".parse().expect("static")),
        ],
    )
        .into_response()
}

// ---------------------------------------------------------------- overview

/// Warnings shown next to a credential.
fn warnings(cred: &Value, schedules: &[Value], now: DateTime<Utc>) -> Vec<String> {
    let mut w = vec![];
    let perms: Vec<&str> = cred["permissions"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if perms.contains(&"withdraw") {
        w.push("withdrawals enabled".to_string());
    }
    if cred["limits"]
        .get("ip_allowlist")
        .is_none_or(|v| v.is_null())
    {
        w.push("no IP restriction".to_string());
    }
    if cred["status"] == "suspended" {
        w.push(format!(
            "suspended: {}",
            cred["suspended_reason"]
                .as_str()
                .unwrap_or("no reason given")
        ));
    }
    if let Some(exp) = cred["expires_at"]
        .as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
    {
        if exp < now {
            w.push("expired at the exchange".into());
        } else if exp < now + Duration::days(14) {
            w.push(format!(
                "expires at the exchange on {}",
                exp.format("%Y-%m-%d")
            ));
        }
    }
    for sch in schedules
        .iter()
        .filter(|x| x["credential_id"] == cred["id"])
    {
        if let Some(due) = sch["next_due_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        {
            if due < now {
                w.push("rotation overdue".into());
            } else if due < now + Duration::days(7) {
                w.push("rotation due soon".into());
            }
        }
    }
    w
}

pub async fn overview(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let creds = c.get(&s, &sess, "/v1/credentials?limit=200").await;
    let vault = c.get(&s, &sess, "/v1/vault/status").await;
    let denials = c.get(&s, &sess, "/v1/audit?result=failure&limit=10").await;
    let rotation = c.get(&s, &sess, "/v1/rotation").await;
    let schedules = rotation.items();
    let now = Utc::now();
    let creds: Vec<Value> = creds
        .items()
        .into_iter()
        .map(|mut cr| {
            let w = warnings(&cr, &schedules, now);
            cr["warnings"] = json!(w);
            cr
        })
        .collect();
    render(
        "overview.html",
        &sess,
        json!({
            "credentials": creds,
            "vault": vault.body,
            "denials": denials.items(),
        }),
    )
}

// ---------------------------------------------------------------- vault

async fn vault_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let status = c.get(s, sess, "/v1/vault/status").await;
    let log = c.get(s, sess, "/v1/vault/access-log?limit=50").await;
    let left = status.body["unlocked_until"]
        .as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        .map(|t| (t - Utc::now()).num_minutes().max(0));
    render(
        "vault.html",
        sess,
        json!({
            "vault": status.body, "log": log.items(), "minutes_left": left,
            "notice": notice, "error": error,
        }),
    )
}

pub async fn vault(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    vault_page(&s, &c, &sess, None, None).await
}

pub async fn vault_action(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let action = form.get("action").unwrap_or("");
    // The JSON body handed to the API handler holds its own copy; this one is wiped on drop.
    let password = zeroize::Zeroizing::new(form.get("password").unwrap_or("").to_string());
    let (uri, body) = match action {
        "setup" => {
            let mut b = json!({"password": password.as_str()});
            if let Some(m) = form.text("auto_lock_minutes") {
                b["auto_lock_minutes"] = m
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(m));
            }
            ("/v1/vault/setup", Some(b))
        }
        "unlock" => (
            "/v1/vault/unlock",
            Some(json!({"password": password.as_str()})),
        ),
        "lock" => ("/v1/vault/lock", None),
        _ => return vault_page(&s, &c, &sess, None, Some("unknown action".into())).await,
    };
    drop(password);
    let r = c.call(&s, &sess, Method::POST, uri, body).await;
    if r.ok() {
        let msg = match action {
            "setup" => "Vault password set; the vault is unlocked.",
            "unlock" => "Vault unlocked.",
            _ => "Vault locked.",
        };
        vault_page(&s, &c, &sess, Some(msg.into()), None).await
    } else {
        let fe = r.field_errors();
        let mut m = r.message();
        if let Some(f) = fe.values().next() {
            m = format!("{m}: {f}");
        }
        vault_page(&s, &c, &sess, None, Some(m)).await
    }
}

// ---------------------------------------------------------------- credentials

const EXCHANGES: &[&str] = &[
    "binance",
    "binanceusdm",
    "okx",
    "bybit",
    "kraken",
    "kucoin",
    "bitget",
    "gate",
    "coinbase",
];

pub(super) async fn credentials_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
    form: Value,
) -> Response {
    let creds = c.get(s, sess, "/v1/credentials?limit=200").await;
    render(
        "credentials.html",
        sess,
        json!({
            "credentials": creds.items(), "exchanges": EXCHANGES,
            "notice": notice, "error": error, "errors": errors, "form": form,
        }),
    )
}

pub async fn credentials(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    credentials_page(&s, &c, &sess, None, None, json!({}), json!({})).await
}

pub async fn credential_add(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut b = Map::new();
    b.insert("exchange".into(), json!(form.get("exchange").unwrap_or("")));
    b.insert("label".into(), json!(form.get("label").unwrap_or("")));
    if let Some(e) = form.text("environment") {
        b.insert("environment".into(), json!(e));
    }
    b.insert("api_key".into(), json!(form.get("api_key").unwrap_or("")));
    for k in ["api_secret", "passphrase", "private_key"] {
        if let Some(v) = form.text(k) {
            b.insert(k.into(), json!(v));
        }
    }
    let perms = form.all("permissions");
    if !perms.is_empty() {
        b.insert("permissions".into(), json!(perms));
    }
    let r = c
        .call(
            &s,
            &sess,
            Method::POST,
            "/v1/credentials",
            Some(Value::Object(b)),
        )
        .await;
    // Only non-secret fields are ever echoed back into the form.
    let echo = json!({"exchange": form.get("exchange"), "label": form.get("label"), "environment": form.get("environment")});
    if r.ok() {
        let label = r.body["label"].as_str().unwrap_or("").to_string();
        credentials_page(
            &s,
            &c,
            &sess,
            Some(format!("Credential “{label}” added.")),
            None,
            json!({}),
            json!({}),
        )
        .await
    } else {
        credentials_page(
            &s,
            &c,
            &sess,
            None,
            Some(r.message()),
            json!(r.field_errors()),
            echo,
        )
        .await
    }
}

pub async fn credential_action(
    State(s): State<AppState>,
    c: Ctx,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let action = form.get("action").unwrap_or("");
    if super::keys::DETAIL_ACTIONS.contains(&action) {
        return super::keys::detail_action(&s, &c, &sess, id, action, &form).await;
    }
    let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
    let (m, uri, b, done) = match action {
        "delete" => (
            Method::DELETE,
            format!("/v1/credentials/{id}"),
            None,
            "Credential deleted.",
        ),
        "suspend" => (
            Method::PATCH,
            format!("/v1/credentials/{id}"),
            Some(json!({"status": "suspended", "version": version})),
            "Credential suspended.",
        ),
        "reactivate" => (
            Method::POST,
            format!("/v1/credentials/{id}/reactivate"),
            Some(json!({})),
            "Credential reactivated.",
        ),
        _ => {
            return credentials_page(
                &s,
                &c,
                &sess,
                None,
                Some("unknown action".into()),
                json!({}),
                json!({}),
            )
            .await
        }
    };
    let r = c.call(&s, &sess, m, &uri, b).await;
    // Suspend and reactivate from a credential's own page return there.
    if form.get("from") == Some("detail") && action != "delete" {
        let (notice, error) = if r.ok() {
            (Some(done.to_string()), None)
        } else {
            (None, Some(r.message()))
        };
        return super::keys::credential_page(&s, &c, &sess, id, notice, error, json!({}), None)
            .await;
    }
    if r.ok() {
        credentials_page(&s, &c, &sess, Some(done.into()), None, json!({}), json!({})).await
    } else {
        credentials_page(&s, &c, &sess, None, Some(r.message()), json!({}), json!({})).await
    }
}

// ---------------------------------------------------------------- connections

/// How the limits editor shows and sends one field of `keygate_policy::Limits`.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Whole number (request rates: `u32` in the API).
    Count,
    /// Decimal amount, sent as a string so no precision is lost.
    Amount,
    /// Comma- or line-separated allowlist (`None` = no limit, empty = allow none).
    List,
    /// Comma- or line-separated blocklist (empty = nothing blocked).
    Blocklist,
    /// Withdrawal destinations: comma- or line-separated, each `address` or
    /// `address#tag`, optionally followed by `on NETWORK`
    /// ([`keygate_policy::AllowedDestination`]).
    Destinations,
    /// Checkbox.
    Flag,
}

/// Every field of the limits model, in the editor's order: (name, kind, label).
const LIMIT_FIELDS: &[(&str, Kind, &str)] = &[
    ("max_trade_usd", Kind::Amount, "Max per order (USD)"),
    (
        "max_daily_volume_usd",
        Kind::Amount,
        "Max traded per day (USD)",
    ),
    (
        "max_position_size",
        Kind::Amount,
        "Max net position per symbol (base units)",
    ),
    ("max_leverage", Kind::Amount, "Max leverage (×)"),
    (
        "max_daily_loss_usd",
        Kind::Amount,
        "Max loss per day (USD; then only reduce-only orders)",
    ),
    (
        "max_withdrawal_usd_per_tx",
        Kind::Amount,
        "Max per withdrawal (USD)",
    ),
    (
        "max_withdrawal_usd_per_day",
        Kind::Amount,
        "Max withdrawn per day (USD)",
    ),
    (
        "max_withdrawal_usd_per_month",
        Kind::Amount,
        "Max withdrawn per month (USD)",
    ),
    (
        "max_requests_per_minute",
        Kind::Count,
        "Max requests per minute",
    ),
    (
        "max_requests_per_hour",
        Kind::Count,
        "Max requests per hour",
    ),
    ("max_requests_per_day", Kind::Count, "Max requests per day"),
    (
        "stop_loss_percentage",
        Kind::Amount,
        "Stop-loss % (passed to bots, not enforced)",
    ),
    ("allowed_symbols", Kind::List, "Allowed symbols"),
    ("blocked_symbols", Kind::Blocklist, "Blocked symbols"),
    ("ip_allowlist", Kind::List, "Caller IP allowlist (CIDRs)"),
    (
        "withdrawal_address_allowlist",
        Kind::Destinations,
        "Withdrawal address allowlist (address or address#memo, then optionally on NETWORK)",
    ),
    (
        "allow_unknown_endpoints",
        Kind::Flag,
        "Allow endpoints keygate cannot classify",
    ),
    (
        "allow_manage_endpoints",
        Kind::Flag,
        "Allow key-management and account-settings endpoints",
    ),
];

/// How the editor writes an allowlist that allows nothing (an empty list), so that
/// saving the form again keeps it: an empty field means no limit.
const NONE_ALLOWED: &str = "(none)";

/// Scopes a connection may be narrowed to (DESIGN.md §7).
const SCOPES: &[&str] = &["read", "trade", "withdraw", "transfer", "sub_account"];

/// The limits object from the editor's fields, plus the fields the console itself rejects
/// (not a number). Everything else is passed on as typed, so the API's own validation
/// reports what is wrong, by field.
fn limits_from(form: &Form) -> (Value, Map<String, Value>) {
    let mut l = Map::new();
    let mut errors = Map::new();
    for (k, kind, _) in LIMIT_FIELDS {
        let name = format!("limits.{k}");
        match kind {
            Kind::Flag => {
                l.insert((*k).into(), json!(form.get(&name) == Some("on")));
            }
            Kind::List | Kind::Destinations
                if form
                    .text(&name)
                    .is_some_and(|v| v.eq_ignore_ascii_case(NONE_ALLOWED)) =>
            {
                l.insert((*k).into(), json!([]));
            }
            Kind::List | Kind::Blocklist => {
                if let Some(v) = form.text(&name) {
                    let items: Vec<String> = v
                        .split([',', '\n', ' '])
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect();
                    l.insert((*k).into(), json!(items));
                }
            }
            Kind::Destinations => {
                if let Some(v) = form.text(&name) {
                    match destinations_from(&v) {
                        Ok(items) => {
                            l.insert((*k).into(), Value::Array(items));
                        }
                        Err(e) => {
                            errors.insert(name, json!(e));
                        }
                    }
                }
            }
            Kind::Count => {
                if let Some(v) = form.text(&name) {
                    match v.parse::<u64>() {
                        Ok(n) => {
                            l.insert((*k).into(), json!(n));
                        }
                        Err(_) => {
                            errors.insert(name, json!("must be a whole number"));
                        }
                    }
                }
            }
            Kind::Amount => {
                if let Some(v) = form.text(&name) {
                    if v.parse::<f64>().is_ok_and(f64::is_finite) {
                        l.insert((*k).into(), json!(v));
                    } else {
                        errors.insert(name, json!("must be a number"));
                    }
                }
            }
        }
    }
    (Value::Object(l), errors)
}

/// The connection's `scopes` from the editor: `null` = all of the credential's.
fn scopes_from(form: &Form) -> Value {
    if form.get("scope_mode") == Some("only") {
        json!(form.all("scopes"))
    } else {
        Value::Null
    }
}

/// The editor's field values from a stored limits object.
fn limits_fields(l: &Value) -> Value {
    let mut m = Map::new();
    for (k, kind, _) in LIMIT_FIELDS {
        let Some(v) = l.get(*k).filter(|v| !v.is_null()) else {
            continue;
        };
        let shown = match kind {
            Kind::Flag => json!(v.as_bool().unwrap_or(false)),
            Kind::List | Kind::Destinations if v.as_array().is_some_and(Vec::is_empty) => {
                json!(NONE_ALLOWED)
            }
            Kind::List | Kind::Blocklist => json!(v
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()),
            Kind::Destinations => json!(v
                .as_array()
                .map(|a| a
                    .iter()
                    .map(destination_text)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()),
            Kind::Count | Kind::Amount => json!(v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())),
        };
        m.insert((*k).into(), shown);
    }
    Value::Object(m)
}

/// The allowlist entries typed in the editor: comma- or line-separated, each
/// `address[#tag]` or `address[#tag] on NETWORK`. Without `on`, words separated by spaces
/// are entries of their own, as in the other lists. Entries go to the API as typed, which
/// validates them.
fn destinations_from(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for item in text.split([',', '\n']) {
        let words: Vec<&str> = item.split_whitespace().collect();
        match words.iter().position(|w| w.eq_ignore_ascii_case("on")) {
            None => out.extend(words.iter().map(|w| json!(w))),
            Some(1) if words.len() == 3 => {
                let d = keygate_policy::AllowedDestination::parse(words[0]);
                out.push(json!({ "address": d.address, "tag": d.tag, "network": words[2] }));
            }
            Some(_) => {
                return Err(format!(
                "write each entry as address, address#memo or address#memo on NETWORK (not: {})",
                item.trim()
            ))
            }
        }
    }
    Ok(out)
}

/// One stored allowlist entry as the editor shows it (the inverse of
/// [`destinations_from`]).
fn destination_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => {
            let part = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
            let mut s = part("address").to_string();
            if !part("tag").is_empty() || s.contains('#') {
                // `a#b` with no tag is written `a#b#`, which reads back as address `a#b`.
                s = format!("{s}#{}", part("tag"));
            }
            if !part("network").is_empty() {
                s = format!("{s} on {}", part("network"));
            }
            s
        }
    }
}

/// The editor's fields as submitted (to show them again next to the errors).
fn form_fields(form: &Form) -> Value {
    let mut m = Map::new();
    for (k, kind, _) in LIMIT_FIELDS {
        let name = format!("limits.{k}");
        if *kind == Kind::Flag {
            m.insert((*k).into(), json!(form.get(&name) == Some("on")));
        } else if let Some(v) = form.get(&name) {
            m.insert((*k).into(), json!(v));
        }
    }
    Value::Object(m)
}

fn limit_field_list() -> Value {
    json!(LIMIT_FIELDS
        .iter()
        .map(|(k, kind, label)| json!({
            "name": k,
            "label": label,
            "kind": match kind {
                Kind::Count | Kind::Amount => "number",
                Kind::List | Kind::Destinations => "list",
                Kind::Blocklist => "blocklist",
                Kind::Flag => "flag",
            },
        }))
        .collect::<Vec<_>>())
}

async fn connections_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    error: Option<String>,
    errors: Value,
    form: Value,
    scopes: Value,
) -> Response {
    let conns = c.get(s, sess, "/v1/connections?limit=200").await;
    let creds = c.get(s, sess, "/v1/credentials?limit=200").await;
    render(
        "connections.html",
        sess,
        json!({
            "connections": conns.items(), "credentials": creds.items(),
            "error": error, "errors": errors, "form": form,
            "limit_fields": limit_field_list(), "scope_names": SCOPES, "scopes": scopes,
        }),
    )
}

pub async fn connections(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    connections_page(&s, &c, &sess, None, json!({}), json!({}), Value::Null).await
}

/// Console-side field errors merged under the API's (the API's win for the same field).
fn merged_errors(local: Map<String, Value>, api: &ApiReply) -> Value {
    let mut m = local;
    for (k, v) in api.field_errors() {
        m.insert(k, json!(v));
    }
    Value::Object(m)
}

pub async fn connection_add(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let cred_id = form.get("credential_id").unwrap_or("");
    let cred = match Uuid::parse_str(cred_id) {
        Ok(id) => c.get(&s, &sess, &format!("/v1/credentials/{id}")).await,
        Err(_) => ApiReply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({"detail": "choose a credential"}),
        },
    };
    let mut echo = form_fields(&form);
    echo["name"] = json!(form.get("name"));
    echo["base_url"] = json!(form.get("base_url"));
    let scopes = scopes_from(&form);
    if !cred.ok() {
        return connections_page(&s, &c, &sess, Some(cred.message()), json!({}), echo, scopes)
            .await;
    }
    let (limits, local) = limits_from(&form);
    if !local.is_empty() {
        return connections_page(
            &s,
            &c,
            &sess,
            Some("Some limits are not valid; see the marked fields.".into()),
            Value::Object(local),
            echo,
            scopes,
        )
        .await;
    }
    let mut b = json!({
        "name": form.get("name").unwrap_or(""),
        "exchange": cred.body["exchange"],
        "credential_id": cred_id,
        "limits": limits,
    });
    if !scopes.is_null() {
        b["scopes"] = scopes.clone();
    }
    if let Some(u) = form.text("base_url") {
        b["base_url"] = json!(u);
    }
    let r = c
        .call(&s, &sess, Method::POST, "/v1/connections", Some(b))
        .await;
    if r.ok() {
        let id = r.body["id"].as_str().unwrap_or("").to_string();
        see_other(&format!("/ui/connections/{id}?created=1"))
    } else {
        connections_page(
            &s,
            &c,
            &sess,
            Some(r.message()),
            merged_errors(Map::new(), &r),
            echo,
            scopes,
        )
        .await
    }
}

#[derive(serde::Deserialize)]
pub struct ConnQuery {
    created: Option<String>,
}

/// What a connection page shows besides the stored connection.
struct ConnPage {
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
    /// Limits fields and scopes as submitted, after a refused save.
    submitted: Option<(Value, Value)>,
    /// The key check / sync report, right after "sync now".
    report: Option<Value>,
}

impl Default for ConnPage {
    fn default() -> Self {
        ConnPage {
            notice: None,
            error: None,
            errors: json!({}),
            submitted: None,
            report: None,
        }
    }
}

async fn connection_page(s: &AppState, c: &Ctx, sess: &Session, id: Uuid, p: ConnPage) -> Response {
    let conn = c.get(s, sess, &format!("/v1/connections/{id}")).await;
    if conn.status == StatusCode::NOT_FOUND {
        return render_status(StatusCode::NOT_FOUND, "404.html", Some(sess), json!({}));
    }
    let balances = c
        .get(s, sess, &format!("/v1/connections/{id}/balances"))
        .await;
    let calls = c
        .get(s, sess, &format!("/v1/connections/{id}/calls?limit=20"))
        .await;
    let (fields, scopes) = p.submitted.unwrap_or_else(|| {
        (
            limits_fields(&conn.body["limits"]),
            conn.body["scopes"].clone(),
        )
    });
    let host = c
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let scheme = if session::https(s, &c.headers) {
        "https"
    } else {
        "http"
    };
    let exchange = conn.body["exchange"].as_str().unwrap_or("binance");
    let ccxt_id: String = exchange
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric())
        .collect();
    let snippet = format!(
        "import ccxt\n\nKEYGATE = \"{scheme}://{host}/v1/connections/{id}/proxy\"\nex = ccxt.{ccxt_id}({{\n    \"apiKey\": \"keygate\",   # placeholder; keygate signs\n    \"secret\": \"keygate\",\n    \"headers\": {{\"X-Keygate-Token\": TOKEN}},  # from `keygate token --user ...`\n}})\nex.urls[\"api\"] = {{k: KEYGATE for k in ex.urls[\"api\"]}}\nprint(ex.fetch_balance())\n"
    );
    render(
        "connection.html",
        sess,
        json!({
            "conn": conn.body, "fields": fields, "limit_fields": limit_field_list(),
            "scope_names": SCOPES, "scopes": scopes,
            "balances": balances.body, "balances_ok": balances.ok(), "calls": calls.items(),
            "notice": p.notice, "error": p.error, "errors": p.errors, "snippet": snippet,
            "report": p.report,
        }),
    )
}

pub async fn connection(
    State(s): State<AppState>,
    c: Ctx,
    Path(id): Path<Uuid>,
    Query(q): Query<ConnQuery>,
) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = q.created.map(|_| "Connection created.".to_string());
    connection_page(
        &s,
        &c,
        &sess,
        id,
        ConnPage {
            notice,
            ..Default::default()
        },
    )
    .await
}

pub async fn connection_action(
    State(s): State<AppState>,
    c: Ctx,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let page = match form.get("action").unwrap_or("") {
        "limits" => {
            let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
            let (limits, local) = limits_from(&form);
            let scopes = scopes_from(&form);
            let refused = |error: String, errors: Value| ConnPage {
                error: Some(error),
                errors,
                submitted: Some((form_fields(&form), scopes.clone())),
                ..Default::default()
            };
            if !local.is_empty() {
                refused(
                    "Some limits are not valid; see the marked fields.".into(),
                    Value::Object(local),
                )
            } else {
                let r = c
                    .call(
                        &s,
                        &sess,
                        Method::PATCH,
                        &format!("/v1/connections/{id}"),
                        Some(
                            json!({"limits": limits, "scopes": scopes.clone(), "version": version}),
                        ),
                    )
                    .await;
                if r.ok() {
                    ConnPage {
                        notice: Some("Limits saved.".into()),
                        ..Default::default()
                    }
                } else {
                    refused(r.message(), merged_errors(Map::new(), &r))
                }
            }
        }
        "sync" => {
            let r = c
                .call(
                    &s,
                    &sess,
                    Method::POST,
                    &format!("/v1/connections/{id}/sync"),
                    Some(json!({})),
                )
                .await;
            if r.ok() {
                ConnPage {
                    notice: Some("Synced with the exchange.".into()),
                    report: Some(super::keys::key_check_view(&r.body, None)),
                    ..Default::default()
                }
            } else {
                ConnPage {
                    error: Some(format!("Sync failed: {}", r.message())),
                    ..Default::default()
                }
            }
        }
        _ => ConnPage {
            error: Some("unknown action".into()),
            ..Default::default()
        },
    };
    connection_page(&s, &c, &sess, id, page).await
}

// ---------------------------------------------------------------- audit

#[derive(serde::Deserialize)]
pub struct AuditFilter {
    category: Option<String>,
    result: Option<String>,
    credential_id: Option<String>,
}

impl AuditFilter {
    /// The filter as an API query string (empty values dropped).
    fn query(&self, limit: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(l) = limit {
            q.append_pair("limit", l);
        }
        for (k, v) in [
            ("category", &self.category),
            ("result", &self.result),
            ("credential_id", &self.credential_id),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }
}

/// Calls and denials per day for the last 14 days, as SVG bar geometry.
fn chart(events: &[Value], now: DateTime<Utc>) -> Value {
    let days = 14i64;
    let mut calls = vec![0u32; days as usize];
    let mut denials = vec![0u32; days as usize];
    for e in events {
        let Some(t) = e["created_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let age = (now.date_naive() - t.date_naive()).num_days();
        if !(0..days).contains(&age) {
            continue;
        }
        let i = (days - 1 - age) as usize;
        if e["category"] == "gateway" {
            calls[i] += 1;
        }
        if e["success"] == false {
            denials[i] += 1;
        }
    }
    let max = calls
        .iter()
        .chain(&denials)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let h = 120.0;
    let bars: Vec<Value> = (0..days as usize)
        .map(|i| {
            let day = (now - Duration::days(days - 1 - i as i64))
                .format("%m-%d")
                .to_string();
            let ch = calls[i] as f64 / max * h;
            let dh = denials[i] as f64 / max * h;
            json!({"x": 30 + i * 40, "day": day, "calls": calls[i], "denials": denials[i],
                   "ch": ch, "cy": 10.0 + h - ch, "dh": dh, "dy": 10.0 + h - dh})
        })
        .collect();
    json!({"bars": bars, "max": max as u64})
}

/// Series per credential drawn by the weight chart (more share the last colour).
const SERIES: usize = 6;

/// Exchange rate-limit weight used per credential, hourly peaks over the last 24 hours,
/// as SVG polyline geometry plus a per-credential summary. `calls` are API call rows
/// (`/v1/connections/{id}/calls`); `labels` maps credential ids to labels.
fn weight_chart(calls: &[Value], labels: &Map<String, Value>, now: DateTime<Utc>) -> Value {
    const HOURS: i64 = 24;
    let start = now - Duration::hours(HOURS - 1);
    let start = start
        .date_naive()
        .and_hms_opt(start.hour(), 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(start);
    // credential id -> hourly peak
    let mut peaks: std::collections::BTreeMap<String, Vec<Option<i64>>> = Default::default();
    for call in calls {
        let (Some(cred), Some(used), Some(t)) = (
            call["credential_id"].as_str(),
            call["rate_limit_used"].as_i64(),
            call["created_at"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok()),
        ) else {
            continue;
        };
        let i = (t - start).num_hours();
        if !(0..HOURS).contains(&i) || t < start {
            continue;
        }
        let slot = &mut peaks
            .entry(cred.to_string())
            .or_insert_with(|| vec![None; HOURS as usize])[i as usize];
        *slot = Some(slot.map_or(used, |p| p.max(used)));
    }
    let max = peaks
        .values()
        .flatten()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let h = 120.0;
    let x = |i: usize| 40.0 + i as f64 * 23.0;
    let series: Vec<Value> = peaks
        .iter()
        .enumerate()
        .map(|(n, (cred, hours))| {
            let points: Vec<Value> = hours
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.map(|v| {
                        let hour = (start + Duration::hours(i as i64)).format("%H:00");
                        json!({"x": x(i), "y": 10.0 + h - v as f64 / max * h,
                               "v": v, "hour": hour.to_string()})
                    })
                })
                .collect();
            let line = points
                .iter()
                .map(|p| format!("{:.1},{:.1}", p["x"].as_f64().unwrap_or(0.0), p["y"].as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(" ");
            let values: Vec<i64> = hours.iter().flatten().copied().collect();
            json!({
                "credential_id": cred,
                "label": labels.get(cred).and_then(|v| v.as_str()).unwrap_or("(deleted credential)"),
                "class": format!("s{}", n.min(SERIES - 1)),
                "points": points,
                "line": line,
                "peak": values.iter().max(),
                "latest": hours.iter().rev().flatten().next(),
                "samples": values.len(),
            })
        })
        .collect();
    let ticks: Vec<Value> = (0..HOURS as usize)
        .step_by(4)
        .map(|i| json!({"x": x(i), "label": (start + Duration::hours(i as i64)).format("%H:00").to_string()}))
        .collect();
    json!({"series": series, "max": max as i64, "ticks": ticks})
}

pub async fn audit(State(s): State<AppState>, c: Ctx, Query(f): Query<AuditFilter>) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list = c
        .get(&s, &sess, &format!("/v1/audit?{}", f.query(Some("200"))))
        .await;
    let recent = c.get(&s, &sess, "/v1/audit?limit=200").await.items();
    let verify = c.get(&s, &sess, "/v1/audit/verify").await;
    // Exchange weight: the call logs of (up to 20 of) the user's connections.
    let labels: Map<String, Value> = c
        .get(&s, &sess, "/v1/credentials?limit=200")
        .await
        .items()
        .into_iter()
        .filter_map(|cr| Some((cr["id"].as_str()?.to_string(), cr["label"].clone())))
        .collect();
    let mut calls = Vec::new();
    for conn in c
        .get(&s, &sess, "/v1/connections?limit=20")
        .await
        .items()
        .iter()
        .filter_map(|cn| cn["id"].as_str().map(String::from))
    {
        calls.extend(
            c.get(
                &s,
                &sess,
                &format!("/v1/connections/{conn}/calls?limit=200"),
            )
            .await
            .items(),
        );
    }
    let export = format!("/ui/audit/export?{}", f.query(None));
    render(
        "audit.html",
        &sess,
        json!({
            "events": list.items(), "error": (!list.ok()).then(|| list.message()),
            "verify": verify.body, "verify_ok": verify.ok(),
            "chart": chart(&recent, Utc::now()),
            "weight": weight_chart(&calls, &labels, Utc::now()),
            "export": export,
            "filter": {"category": f.category, "result": f.result, "credential_id": f.credential_id},
            "categories": ["vault", "credential", "connection", "gateway", "integration", "site_key", "webhook", "admin", "audit"],
        }),
    )
}

/// The audit export as JSON lines, streamed from `/v1/audit/export` as the signed-in user.
pub async fn audit_export(
    State(s): State<AppState>,
    c: Ctx,
    Query(f): Query<AuditFilter>,
) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let resp = super::dispatch(
        &s,
        &sess,
        &c.headers,
        c.conn,
        Method::GET,
        &format!("/v1/audit/export?{}", f.query(None)),
        None,
    )
    .await;
    if !resp.status().is_success() {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let r = ApiReply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        return render_status(
            status,
            "error.html",
            Some(&sess),
            json!({"title": "Export failed", "detail": r.message()}),
        );
    }
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(body);
    for h in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(v) = parts.headers.get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

// ---------------------------------------------------------------- admin

pub async fn admin_site_keys(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match super::admin::admin_session(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let keys = c.get(&s, &sess, "/v1/site-keys?limit=200").await;
    render(
        "site_keys.html",
        &sess,
        json!({"keys": keys.items(), "error": (!keys.ok()).then(|| keys.message()), "section": "site-keys"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_entries_read_and_show_with_their_network() {
        let typed = "0xabc on ARBITRUM, rAddr#123 ON xrp\nbc1qa bc1qb,\n  0xdef  ";
        let entries = destinations_from(typed).unwrap();
        assert_eq!(
            entries,
            vec![
                json!({"address": "0xabc", "tag": null, "network": "ARBITRUM"}),
                json!({"address": "rAddr", "tag": "123", "network": "xrp"}),
                json!("bc1qa"),
                json!("bc1qb"),
                json!("0xdef"),
            ]
        );
        // What the API stores reads back as typed.
        let stored: Vec<keygate_policy::AllowedDestination> =
            serde_json::from_value(Value::Array(entries)).unwrap();
        let shown: Vec<String> = serde_json::to_value(&stored)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(destination_text)
            .collect();
        assert_eq!(
            shown,
            [
                "0xabc on ARBITRUM",
                "rAddr#123 on xrp",
                "bc1qa",
                "bc1qb",
                "0xdef"
            ]
        );
        assert_eq!(
            destinations_from(&shown.join(", ")).unwrap(),
            destinations_from(typed).unwrap()
        );
        for bad in ["0xabc on", "on ETH", "0xabc on ETH BSC", "0xabc ETH on"] {
            assert!(destinations_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_editor_keeps_a_pinned_entry() {
        let fields = limits_fields(&json!({
            "withdrawal_address_allowlist": ["0xabc", {"address": "0xdef", "network": "BSC"},
                                             {"address": "a#b", "network": "N"}]
        }));
        assert_eq!(
            fields["withdrawal_address_allowlist"],
            json!("0xabc, 0xdef on BSC, a#b# on N")
        );
        let back =
            destinations_from(fields["withdrawal_address_allowlist"].as_str().unwrap()).unwrap();
        let back: Vec<keygate_policy::AllowedDestination> =
            serde_json::from_value(Value::Array(back)).unwrap();
        assert_eq!(back[2].address, "a#b");
        assert_eq!(back[2].network.as_deref(), Some("N"));
    }

    /// An allowlist that allows nothing is shown as `(none)` and saved back as an empty
    /// list. It was shown as an empty field, which saving the form again turned into no
    /// limit at all: withdrawals to anywhere, any symbol, any caller IP.
    #[test]
    fn an_allowlist_that_allows_nothing_survives_the_editor() {
        let stored = json!({
            "withdrawal_address_allowlist": [],
            "allowed_symbols": [],
            "ip_allowlist": [],
            "blocked_symbols": [],
        });
        let fields = limits_fields(&stored);
        let mut form = Vec::new();
        for (k, v) in fields.as_object().unwrap() {
            form.push((format!("limits.{k}"), v.as_str().unwrap().to_string()));
        }
        assert!(form.contains(&("limits.allowed_symbols".into(), "(none)".into())));
        let (sent, errors) = limits_from(&Form(form));
        assert!(errors.is_empty(), "{errors:?}");
        for k in [
            "withdrawal_address_allowlist",
            "allowed_symbols",
            "ip_allowlist",
        ] {
            assert_eq!(sent[k], json!([]), "{k}");
        }
        assert_eq!(fields["blocked_symbols"], json!(""), "nothing blocked");
        assert_eq!(sent.get("blocked_symbols"), None);
    }
}
