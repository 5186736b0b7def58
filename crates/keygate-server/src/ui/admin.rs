//! Admin pages (admins only; everyone else gets the same 404 as for a page that does not
//! exist): site keys, integrations across users, suspended credentials across users, and
//! the effective platform settings. Views of the `/v1/admin/...` and `/v1/site-keys` API.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use uuid::Uuid;

use super::pages::{guard, need, Ctx};
use super::session::Session;
use super::{render, render_status, Form};
use crate::state::AppState;

fn not_found(sess: &Session) -> Response {
    render_status(StatusCode::NOT_FOUND, "404.html", Some(sess), json!({}))
}

/// A signed-in admin, or the 404 page (sign-in page when not signed in).
pub async fn admin_session(s: &AppState, c: &Ctx) -> Result<Session, Response> {
    let sess = need(s, c).await?;
    if sess.admin {
        Ok(sess)
    } else {
        Err(not_found(&sess))
    }
}

pub async fn index(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match admin_session(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let suspended = c
        .get(
            &s,
            &sess,
            "/v1/admin/credentials?status=suspended&limit=200",
        )
        .await
        .items()
        .len();
    let integrations = c.get(&s, &sess, "/v1/admin/integrations?limit=200").await;
    let attention = integrations
        .items()
        .iter()
        // paused by their owner is no trouble
        .filter(|i| i["status"] != "active" && i["status"] != "disabled")
        .count();
    render(
        "admin.html",
        &sess,
        json!({"section": "index", "suspended": suspended,
               "integrations": integrations.items().len(), "attention": attention}),
    )
}

pub async fn integrations(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match admin_session(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list = c.get(&s, &sess, "/v1/admin/integrations?limit=200").await;
    render(
        "admin_integrations.html",
        &sess,
        json!({"section": "integrations", "items": list.items(),
               "error": (!list.ok()).then(|| list.message())}),
    )
}

async fn credentials_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let list = c
        .get(s, sess, "/v1/admin/credentials?status=suspended&limit=200")
        .await;
    let me = sess.user_id.to_string();
    let items: Vec<Value> = list
        .items()
        .into_iter()
        .map(|mut cr| {
            cr["own"] = json!(cr["user_id"] == me.as_str());
            cr
        })
        .collect();
    render(
        "admin_credentials.html",
        sess,
        json!({"section": "credentials", "items": items, "notice": notice,
               "error": error.or_else(|| (!list.ok()).then(|| list.message()))}),
    )
}

pub async fn credentials(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match admin_session(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    credentials_page(&s, &c, &sess, None, None).await
}

/// Reactivate from the admin list. The API allows only the owner (with a fresh unlock in
/// password mode), so this works for the admin's own keys and is refused for others'.
pub async fn credential_action(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !sess.admin {
        return not_found(&sess);
    }
    let Some(id) = form.get("id").and_then(|v| Uuid::parse_str(v).ok()) else {
        return credentials_page(&s, &c, &sess, None, Some("no credential chosen".into())).await;
    };
    if form.get("action") != Some("reactivate") {
        return credentials_page(&s, &c, &sess, None, Some("unknown action".into())).await;
    }
    let r = c
        .call(
            &s,
            &sess,
            Method::POST,
            &format!("/v1/credentials/{id}/reactivate"),
            Some(json!({})),
        )
        .await;
    if r.ok() {
        credentials_page(&s, &c, &sess, Some("Credential reactivated.".into()), None).await
    } else {
        credentials_page(&s, &c, &sess, None, Some(r.message())).await
    }
}

pub async fn settings(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match admin_session(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list = c.get(&s, &sess, "/v1/admin/settings").await;
    render(
        "admin_settings.html",
        &sess,
        json!({"section": "settings", "items": list.items(),
               "error": (!list.ok()).then(|| list.message())}),
    )
}
