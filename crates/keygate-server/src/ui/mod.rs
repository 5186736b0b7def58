//! The web console at `/ui/`: server-rendered pages (minijinja, templates embedded) whose
//! every read and write goes through the API's own handlers: a console request is turned
//! into an internal `/v1/...` request carrying the session's [`Caller`] and dispatched to
//! the same router, so the console can do nothing the API cannot and every rule holds.

mod admin;
mod keys;
mod link;
mod pages;
mod rotation;
mod webhooks;
pub use link::create_login_link;
pub mod session;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde_json::Value;
use tower::ServiceExt;

use crate::state::AppState;
use session::Session;

const CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's routes, merged into the app router.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login_page).post(pages::login_jwt))
        .route(
            "/ui/auth/{token}",
            get(pages::login_link).post(pages::login_link_confirm),
        )
        .route("/ui/logout", post(pages::logout))
        .route("/ui/vault", get(pages::vault).post(pages::vault_action))
        .route(
            "/ui/credentials",
            get(pages::credentials).post(pages::credential_add),
        )
        .route(
            "/ui/credentials/generate",
            get(keys::generate_page).post(keys::generate),
        )
        .route("/ui/credentials/shred", post(keys::shred))
        .route(
            "/ui/credentials/{id}",
            get(keys::credential).post(pages::credential_action),
        )
        .route(
            "/ui/connections",
            get(pages::connections).post(pages::connection_add),
        )
        .route(
            "/ui/connections/{id}",
            get(pages::connection).post(pages::connection_action),
        )
        .route("/ui/audit", get(pages::audit))
        .route("/ui/audit/export", get(pages::audit_export))
        .route("/ui/rotation", get(rotation::calendar))
        .route("/ui/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/ui/webhooks/{id}",
            get(webhooks::detail).post(webhooks::action),
        )
        .route("/ui/admin", get(admin::index))
        .route("/ui/admin/site-keys", get(pages::admin_site_keys))
        .route("/ui/admin/integrations", get(admin::integrations))
        .route(
            "/ui/admin/credentials",
            get(admin::credentials).post(admin::credential_action),
        )
        .route("/ui/admin/settings", get(admin::settings))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/app.js", get(js))
        .route("/ui/{*rest}", get(not_found))
        .layer(middleware::from_fn_with_state(state, security_headers))
        .layer(middleware::from_fn(host_from_authority))
}

/// HTTP/2 carries the host as the `:authority` pseudo-header, not as `Host`, and hyper
/// does not add one. The console reads `Host` (the same-origin check, the bot snippet's
/// URL), so it is filled in from the request's authority when absent.
async fn host_from_authority(mut req: Request, next: Next) -> Response {
    if !req.headers().contains_key(header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    next.run(req).await
}

async fn security_headers(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // reached over TLS (here or at a proxy): browsers keep to https for a year
    let hsts = session::https(&s, req.headers());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

async fn not_found(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let sess = session::current(&s, &headers).await;
    render_status(
        StatusCode::NOT_FOUND,
        "404.html",
        sess.as_ref(),
        Value::Null,
    )
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut e = Environment::new();
        // Autoescape every template (they are all HTML).
        e.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, src) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("login_link.html", include_str!("templates/login_link.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("vault.html", include_str!("templates/vault.html")),
            (
                "credentials.html",
                include_str!("templates/credentials.html"),
            ),
            (
                "connections.html",
                include_str!("templates/connections.html"),
            ),
            ("connection.html", include_str!("templates/connection.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("site_keys.html", include_str!("templates/site_keys.html")),
            ("404.html", include_str!("templates/404.html")),
            ("limits.html", include_str!("templates/limits.html")),
            ("error.html", include_str!("templates/error.html")),
            ("scopes.html", include_str!("templates/scopes.html")),
            ("keycheck.html", include_str!("templates/keycheck.html")),
            ("credential.html", include_str!("templates/credential.html")),
            ("generate.html", include_str!("templates/generate.html")),
            ("rotation.html", include_str!("templates/rotation.html")),
            ("webhooks.html", include_str!("templates/webhooks.html")),
            ("webhook.html", include_str!("templates/webhook.html")),
            ("admin.html", include_str!("templates/admin.html")),
            ("admin_nav.html", include_str!("templates/admin_nav.html")),
            (
                "admin_integrations.html",
                include_str!("templates/admin_integrations.html"),
            ),
            (
                "admin_credentials.html",
                include_str!("templates/admin_credentials.html"),
            ),
            (
                "admin_settings.html",
                include_str!("templates/admin_settings.html"),
            ),
        ] {
            e.add_template(name, src).expect("template parses");
        }
        e
    })
}

/// Renders a page; `data` is merged into the context next to the session fields.
pub fn render_status(
    status: StatusCode,
    name: &str,
    sess: Option<&Session>,
    data: Value,
) -> Response {
    let ctx = serde_json::json!({
        "signed_in": sess.is_some(),
        "admin": sess.is_some_and(|s| s.admin),
        "user_id": sess.map(|s| s.user_id.to_string()),
        "csrf": sess.map(|s| s.csrf.clone()),
        "page": data,
    });
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "ui render failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>error</title><p>internal error</p>".to_string()),
            )
                .into_response()
        }
    }
}

pub fn render(name: &str, sess: &Session, data: Value) -> Response {
    render_status(StatusCode::OK, name, Some(sess), data)
}

/// What an internal API call returned.
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }
    /// The problem's `detail` (or `title`/`code`).
    pub fn message(&self) -> String {
        for k in ["detail", "title", "code"] {
            if let Some(s) = self.body.get(k).and_then(|v| v.as_str()) {
                return s.to_string();
            }
        }
        format!("request failed ({})", self.status.as_u16())
    }
    /// Field errors of a 422 problem, keyed by field.
    pub fn field_errors(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(errs) = self.body.get("errors").and_then(|v| v.as_array()) {
            for e in errs {
                if let (Some(f), Some(msg)) = (
                    e.get("field").and_then(|v| v.as_str()),
                    e.get("message").and_then(|v| v.as_str()),
                ) {
                    m.insert(f.to_string(), msg.to_string());
                }
            }
        }
        m
    }
    pub fn items(&self) -> Vec<Value> {
        self.body
            .get("items")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    }
}

/// Dispatches `method uri` (with an optional JSON body) to the API router as the session's
/// caller. The request's connection info and user agent are carried over, so audit rows
/// show the browser's address.
pub async fn api(
    state: &AppState,
    sess: &Session,
    orig: &HeaderMap,
    conn: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> ApiReply {
    let resp = dispatch(state, sess, orig, conn, method, uri, body).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    ApiReply { status, body }
}

/// Like [`api`], but returns the API's response as it is (status, headers, streamed body),
/// for downloads such as the audit export.
pub async fn dispatch(
    state: &AppState,
    sess: &Session,
    orig: &HeaderMap,
    conn: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ua) = orig.get(header::USER_AGENT) {
        req = req.header(header::USER_AGENT, ua.clone());
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        None => Body::empty(),
    };
    let mut req = match req.body(body) {
        Ok(r) => r,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"detail": "bad request"})),
            )
                .into_response()
        }
    };
    req.extensions_mut().insert(sess.caller());
    if let Some(c) = conn {
        // the browser's address as the outer request resolved it (X-Forwarded-For from a
        // trusted proxy): the inner request carries no such header, so without this its
        // audit rows would name the proxy
        let ip = crate::client_ip::client_ip(
            c.0.ip(),
            orig.get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            &state.config.trusted_proxies,
        );
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                ip,
                c.0.port(),
            )));
        // and the place a trusted proxy named for it
        if let Some(geo) = crate::client_ip::geo_of(orig, c.0.ip(), &state.config) {
            req.extensions_mut().insert(geo);
        }
    }
    match crate::app::router(state.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// A parsed urlencoded form (repeated keys keep their last value, except via `all`).
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Form {
        Form(
            url::form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }
    /// A trimmed, non-empty value.
    pub fn text(&self, k: &str) -> Option<String> {
        self.get(k)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for Form {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in self.0.iter_mut() {
            v.zeroize();
        }
    }
}

/// A refused state-changing request: cross-origin, bad CSRF token, or no session.
pub fn forbidden(sess: Option<&Session>, why: &str) -> Response {
    render_status(
        StatusCode::FORBIDDEN,
        "error.html",
        sess,
        serde_json::json!({"title": "Request refused", "detail": why}),
    )
}
