//! Console page handlers. Reads and writes go through [`super::api`] (the API's own
//! handlers); nothing here touches the store except the session tables.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::session::{self, Session};
use super::{api, forbidden, render, render_status, ApiReply, Form};
use crate::state::AppState;

/// Request context every page needs: headers and the peer address.
pub struct Ctx {
    headers: HeaderMap,
    conn: Option<ConnectInfo<SocketAddr>>,
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
    async fn call(
        &self,
        s: &AppState,
        sess: &Session,
        m: Method,
        uri: &str,
        body: Option<Value>,
    ) -> ApiReply {
        api(s, sess, &self.headers, self.conn, m, uri, body).await
    }
    async fn get(&self, s: &AppState, sess: &Session, uri: &str) -> ApiReply {
        self.call(s, sess, Method::GET, uri, None).await
    }
}

/// A page for signed-in users; others are sent to the sign-in page.
async fn need(s: &AppState, c: &Ctx) -> Result<Session, Response> {
    session::current(s, &c.headers)
        .await
        .ok_or_else(|| Redirect::to("/ui/login").into_response())
}

/// Every POST: same origin first (so a cross-origin post changes nothing, signed in or
/// not), then a live session, then the form's CSRF token.
async fn guard(s: &AppState, c: &Ctx, form: &Form) -> Result<Session, Response> {
    if !session::same_origin(&c.headers) {
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

fn see_other(to: &str) -> Response {
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

pub async fn login_link(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let refused = || {
        render_status(
            StatusCode::FORBIDDEN,
            "login.html",
            None,
            json!({"error": "This sign-in link is invalid, expired or already used. Ask for a new one with `keygate login-link`."}),
        )
    };
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refused();
    }
    match s.store.consume_login_link(&session::hash(&token)).await {
        Ok(Some((user, admin))) => signed_in(&s, user, admin).await,
        Ok(None) => refused(),
        Err(e) => {
            tracing::error!(error = %e, "login link lookup failed");
            refused()
        }
    }
}

async fn signed_in(s: &AppState, user: Uuid, admin: bool) -> Response {
    match session::start(s, user, admin).await {
        Ok(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, "/ui/".parse().expect("static")),
            ],
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ui session create failed");
            render_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "error.html",
                None,
                json!({"title": "Sign-in failed", "detail": "could not create a session"}),
            )
        }
    }
}

pub async fn login_jwt(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    if !session::same_origin(&c.headers) {
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
    match s.auth.verify(&token).await {
        Ok(caller) if !caller.service && caller.user_id.is_some() => {
            signed_in(&s, caller.user_id.expect("checked"), caller.admin).await
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
            (header::SET_COOKIE, session::clear_cookie(&s)),
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
    let password = form.get("password").unwrap_or("").to_string();
    let (uri, body) = match action {
        "setup" => {
            let mut b = json!({"password": password});
            if let Some(m) = form.text("auto_lock_minutes") {
                b["auto_lock_minutes"] = m
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(m));
            }
            ("/v1/vault/setup", Some(b))
        }
        "unlock" => ("/v1/vault/unlock", Some(json!({"password": password}))),
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

async fn credentials_page(
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
    let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
    let (m, uri, b, done) = match form.get("action").unwrap_or("") {
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
    if r.ok() {
        credentials_page(&s, &c, &sess, Some(done.into()), None, json!({}), json!({})).await
    } else {
        credentials_page(&s, &c, &sess, None, Some(r.message()), json!({}), json!({})).await
    }
}

// ---------------------------------------------------------------- connections

const NUM_LIMITS: &[&str] = &[
    "max_trade_usd",
    "max_daily_volume_usd",
    "max_leverage",
    "max_withdrawal_usd_per_tx",
    "max_withdrawal_usd_per_day",
    "max_requests_per_minute",
    "max_requests_per_hour",
];
const LIST_LIMITS: &[&str] = &[
    "allowed_symbols",
    "blocked_symbols",
    "ip_allowlist",
    "withdrawal_address_allowlist",
];

/// The limits object from the editor's fields. Values are passed through as typed so the
/// API's own validation reports what is wrong, by field.
fn limits_from(form: &Form) -> Value {
    let mut l = Map::new();
    for k in NUM_LIMITS {
        if let Some(v) = form.text(&format!("limits.{k}")) {
            let n = v
                .parse::<u64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    v.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or(Value::String(v));
            l.insert((*k).into(), n);
        }
    }
    for k in LIST_LIMITS {
        if let Some(v) = form.text(&format!("limits.{k}")) {
            let items: Vec<String> = v
                .split([',', '\n', ' '])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect();
            l.insert((*k).into(), json!(items));
        }
    }
    Value::Object(l)
}

/// The editor's field values from a stored limits object.
fn limits_fields(l: &Value) -> Value {
    let mut m = Map::new();
    for k in NUM_LIMITS {
        if let Some(v) = l.get(*k).filter(|v| !v.is_null()) {
            m.insert(
                (*k).into(),
                json!(v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())),
            );
        }
    }
    for k in LIST_LIMITS {
        if let Some(a) = l.get(*k).and_then(|v| v.as_array()) {
            m.insert(
                (*k).into(),
                json!(a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")),
            );
        }
    }
    Value::Object(m)
}

fn form_fields(form: &Form) -> Value {
    let mut m = Map::new();
    for k in NUM_LIMITS.iter().chain(LIST_LIMITS) {
        if let Some(v) = form.get(&format!("limits.{k}")) {
            m.insert((*k).into(), json!(v));
        }
    }
    Value::Object(m)
}

async fn connections_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    error: Option<String>,
    errors: Value,
    form: Value,
) -> Response {
    let conns = c.get(s, sess, "/v1/connections?limit=200").await;
    let creds = c.get(s, sess, "/v1/credentials?limit=200").await;
    render(
        "connections.html",
        sess,
        json!({
            "connections": conns.items(), "credentials": creds.items(),
            "error": error, "errors": errors, "form": form,
            "limit_fields": limit_field_list(),
        }),
    )
}

fn limit_field_list() -> Value {
    json!(NUM_LIMITS
        .iter()
        .map(|k| json!({"name": k, "kind": "number"}))
        .chain(
            LIST_LIMITS
                .iter()
                .map(|k| json!({"name": k, "kind": "list"}))
        )
        .collect::<Vec<_>>())
}

pub async fn connections(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    connections_page(&s, &c, &sess, None, json!({}), json!({})).await
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
    if !cred.ok() {
        return connections_page(&s, &c, &sess, Some(cred.message()), json!({}), echo).await;
    }
    let mut b = json!({
        "name": form.get("name").unwrap_or(""),
        "exchange": cred.body["exchange"],
        "credential_id": cred_id,
        "limits": limits_from(&form),
    });
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
            json!(r.field_errors()),
            echo,
        )
        .await
    }
}

#[derive(serde::Deserialize)]
pub struct ConnQuery {
    created: Option<String>,
}

#[allow(clippy::too_many_arguments)] // page state: notice, error, field errors, echoed fields
async fn connection_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    id: Uuid,
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
    fields: Option<Value>,
) -> Response {
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
    let fields = fields.unwrap_or_else(|| limits_fields(&conn.body["limits"]));
    let host = c
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let scheme = if crate::tls::TlsFiles::from_config(&s.config)
        .ok()
        .flatten()
        .is_some()
    {
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
            "balances": balances.body, "balances_ok": balances.ok(), "calls": calls.items(),
            "notice": notice, "error": error, "errors": errors, "snippet": snippet,
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
    connection_page(&s, &c, &sess, id, notice, None, json!({}), None).await
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
    match form.get("action").unwrap_or("") {
        "limits" => {
            let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
            let r = c
                .call(
                    &s,
                    &sess,
                    Method::PATCH,
                    &format!("/v1/connections/{id}"),
                    Some(json!({"limits": limits_from(&form), "version": version})),
                )
                .await;
            if r.ok() {
                connection_page(
                    &s,
                    &c,
                    &sess,
                    id,
                    Some("Limits saved.".into()),
                    None,
                    json!({}),
                    None,
                )
                .await
            } else {
                connection_page(
                    &s,
                    &c,
                    &sess,
                    id,
                    None,
                    Some(r.message()),
                    json!(r.field_errors()),
                    Some(form_fields(&form)),
                )
                .await
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
                connection_page(
                    &s,
                    &c,
                    &sess,
                    id,
                    Some("Synced with the exchange.".into()),
                    None,
                    json!({}),
                    None,
                )
                .await
            } else {
                connection_page(
                    &s,
                    &c,
                    &sess,
                    id,
                    None,
                    Some(format!("Sync failed: {}", r.message())),
                    json!({}),
                    None,
                )
                .await
            }
        }
        _ => {
            connection_page(
                &s,
                &c,
                &sess,
                id,
                None,
                Some("unknown action".into()),
                json!({}),
                None,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------- audit

#[derive(serde::Deserialize)]
pub struct AuditFilter {
    category: Option<String>,
    result: Option<String>,
    credential_id: Option<String>,
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

pub async fn audit(State(s): State<AppState>, c: Ctx, Query(f): Query<AuditFilter>) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let qs = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", "200");
        for (k, v) in [
            ("category", &f.category),
            ("result", &f.result),
            ("credential_id", &f.credential_id),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let list = c.get(&s, &sess, &format!("/v1/audit?{qs}")).await;
    let recent = c.get(&s, &sess, "/v1/audit?limit=200").await.items();
    let verify = c.get(&s, &sess, "/v1/audit/verify").await;
    render(
        "audit.html",
        &sess,
        json!({
            "events": list.items(), "error": (!list.ok()).then(|| list.message()),
            "verify": verify.body, "verify_ok": verify.ok(),
            "chart": chart(&recent, Utc::now()),
            "filter": {"category": f.category, "result": f.result, "credential_id": f.credential_id},
            "categories": ["vault", "credential", "connection", "gateway", "integration", "site_key", "webhook", "admin"],
        }),
    )
}

// ---------------------------------------------------------------- admin

pub async fn admin_site_keys(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !sess.admin {
        return render_status(StatusCode::NOT_FOUND, "404.html", Some(&sess), json!({}));
    }
    let keys = c.get(&s, &sess, "/v1/site-keys?limit=200").await;
    render(
        "site_keys.html",
        &sess,
        json!({"keys": keys.items(), "error": (!keys.ok()).then(|| keys.message())}),
    )
}
