//! Webhook endpoints in the console: list and create (the signing secret is shown once,
//! as the API returns it once), edit, delete, send a test event, and the delivery log.
//! Admins also see and create platform endpoints.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use uuid::Uuid;

use super::pages::{guard, need, see_other, Ctx};
use super::session::Session;
use super::{render, render_status, Form};
use crate::state::AppState;

struct ListPage {
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
    form: Value,
    /// The new endpoint's signing secret, shown once right after creation.
    created: Option<Value>,
}

async fn list_page(s: &AppState, c: &Ctx, sess: &Session, p: ListPage) -> Response {
    let own = c.get(s, sess, "/v1/webhooks?limit=200").await;
    let platform = if sess.admin {
        c.get(s, sess, "/v1/webhooks?platform=true&limit=200")
            .await
            .items()
    } else {
        vec![]
    };
    render(
        "webhooks.html",
        sess,
        json!({
            "webhooks": own.items(), "platform_hooks": platform,
            "event_types": crate::webhooks::EVENT_TYPES,
            "notice": p.notice, "error": p.error.or_else(|| (!own.ok()).then(|| own.message())),
            "errors": p.errors, "form": p.form, "created": p.created,
        }),
    )
}

pub async fn list(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    list_page(
        &s,
        &c,
        &sess,
        ListPage {
            notice: None,
            error: None,
            errors: json!({}),
            form: json!({}),
            created: None,
        },
    )
    .await
}

pub async fn create(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut b = json!({
        "url": form.get("url").unwrap_or(""),
        "events": form.all("events"),
        "platform": sess.admin && form.get("platform") == Some("on"),
    });
    if let Some(d) = form.text("description") {
        b["description"] = json!(d);
    }
    let r = c
        .call(&s, &sess, Method::POST, "/v1/webhooks", Some(b))
        .await;
    let page = if r.ok() {
        ListPage {
            notice: Some("Webhook endpoint added.".into()),
            error: None,
            errors: json!({}),
            form: json!({}),
            created: Some(json!({"id": r.body["id"], "secret": r.body["secret"]})),
        }
    } else {
        ListPage {
            notice: None,
            error: Some(r.message()),
            errors: json!(r.field_errors()),
            form: json!({"url": form.get("url"), "description": form.get("description"),
                         "events": form.all("events")}),
            created: None,
        }
    };
    list_page(&s, &c, &sess, page).await
}

async fn detail_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    id: Uuid,
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
) -> Response {
    let w = c.get(s, sess, &format!("/v1/webhooks/{id}")).await;
    if !w.ok() {
        return render_status(StatusCode::NOT_FOUND, "404.html", Some(sess), json!({}));
    }
    let log = c
        .get(s, sess, &format!("/v1/webhooks/{id}/deliveries?limit=50"))
        .await;
    render(
        "webhook.html",
        sess,
        json!({
            "hook": w.body, "deliveries": log.items(),
            "event_types": crate::webhooks::EVENT_TYPES,
            "notice": notice, "error": error, "errors": errors,
        }),
    )
}

pub async fn detail(State(s): State<AppState>, c: Ctx, Path(id): Path<Uuid>) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    detail_page(&s, &c, &sess, id, None, None, json!({})).await
}

pub async fn action(
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
    let uri = format!("/v1/webhooks/{id}");
    let (r, done) = match form.get("action").unwrap_or("") {
        "update" => {
            let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
            let b = json!({
                "url": form.get("url").unwrap_or(""),
                "description": form.get("description").unwrap_or(""),
                "events": form.all("events"),
                "enabled": form.get("enabled") == Some("on"),
                "version": version,
            });
            (
                c.call(&s, &sess, Method::PATCH, &uri, Some(b)).await,
                "Webhook endpoint saved.",
            )
        }
        "test" => (
            c.call(
                &s,
                &sess,
                Method::POST,
                &format!("{uri}/test"),
                Some(json!({})),
            )
            .await,
            "Test event queued; it shows in the delivery log below (reload to follow it).",
        ),
        "delete" => {
            let r = c.call(&s, &sess, Method::DELETE, &uri, None).await;
            if r.ok() {
                return see_other("/ui/webhooks");
            }
            (r, "")
        }
        _ => {
            return detail_page(
                &s,
                &c,
                &sess,
                id,
                None,
                Some("unknown action".into()),
                json!({}),
            )
            .await
        }
    };
    if r.ok() {
        detail_page(&s, &c, &sess, id, Some(done.into()), None, json!({})).await
    } else {
        detail_page(
            &s,
            &c,
            &sess,
            id,
            None,
            Some(r.message()),
            json!(r.field_errors()),
        )
        .await
    }
}
