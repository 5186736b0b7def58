//! Console pages for one credential: its details, key pairs generated inside keygate (only
//! the public key is ever shown; the exchange's key id is attached afterwards), rotation
//! with a grace period, the rotation schedule, the key check (what the exchange says the
//! key may do, with risk warnings), and crypto-shredding behind a typed confirmation. Every
//! write is the API's; secret inputs are never echoed back into a form.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::pages::{credentials_page, guard, need, see_other, Ctx};
use super::session::Session;
use super::{render, render_status, Form};
use crate::state::AppState;

/// Actions of `POST /ui/credentials/{id}` that belong to the credential's own page.
pub const DETAIL_ACTIONS: &[&str] = &[
    "attach",
    "rotate",
    "schedule",
    "schedule_delete",
    "keycheck",
];

/// Exchanges that take a key pair generated inside keygate (the API's own rule).
const KEYGEN_EXCHANGES: &[&str] = &["binance", "binanceusdm"];

// ---------------------------------------------------------------- generate

fn generate_form(sess: &Session, error: Option<String>, errors: Value, form: Value) -> Response {
    render(
        "generate.html",
        sess,
        json!({"exchanges": KEYGEN_EXCHANGES, "error": error, "errors": errors, "form": form}),
    )
}

pub async fn generate_page(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    generate_form(&sess, None, json!({}), json!({}))
}

pub async fn generate(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut b = json!({
        "exchange": form.get("exchange").unwrap_or(""),
        "label": form.get("label").unwrap_or(""),
        "permissions": form.all("permissions"),
    });
    for k in ["environment", "key_type"] {
        if let Some(v) = form.text(k) {
            b[k] = json!(v);
        }
    }
    let r = c
        .call(&s, &sess, Method::POST, "/v1/credentials/generate", Some(b))
        .await;
    if r.ok() {
        let id = r.body["id"].as_str().unwrap_or("").to_string();
        return see_other(&format!("/ui/credentials/{id}?generated=1"));
    }
    let echo = json!({
        "exchange": form.get("exchange"), "label": form.get("label"),
        "environment": form.get("environment"), "key_type": form.get("key_type"),
        "permissions": form.all("permissions"),
    });
    generate_form(&sess, Some(r.message()), json!(r.field_errors()), echo)
}

// ---------------------------------------------------------------- detail

/// Where to register a generated public key, per exchange and environment.
fn registration(exchange: &str, environment: &str) -> Value {
    let venue = if exchange == "binanceusdm" {
        "Binance (the same key serves spot and USD-M futures)"
    } else {
        "Binance"
    };
    if environment == "testnet" {
        json!({
            "venue": venue,
            "url": "https://testnet.binance.vision/",
            "steps": [
                "Sign in to the Spot Test Network (or the futures testnet for USD-M).",
                "Choose “Register a new key” for Ed25519 or RSA and paste the public key below.",
                "Copy the API key the testnet shows and attach it here.",
            ],
        })
    } else {
        json!({
            "venue": venue,
            "url": "https://www.binance.com/en/my/settings/api-management",
            "steps": [
                "Open API Management and choose Create API → Self-generated.",
                "Paste the public key below and name the key.",
                "Set its permissions (leave withdrawals off unless a bot needs them) and restrict it to keygate's IP address.",
                "Copy the API key Binance shows and attach it here.",
            ],
        })
    }
}

/// The key check report of `POST /v1/connections/{id}/sync`, with the permissions the
/// exchange reported and the risks they carry. `declared` is the credential's own
/// permission list, when known, to flag permissions keygate was not told about.
pub fn key_check_view(report: &Value, declared: Option<&[String]>) -> Value {
    let kc = &report["key_check"];
    let mut risks: Vec<String> = vec![];
    let mut perms = vec![];
    if kc.is_object() {
        for (name, field) in [
            ("read", "can_read"),
            ("trade", "can_trade"),
            ("withdraw", "can_withdraw"),
            ("transfer", "can_transfer"),
        ] {
            let granted = kc[field].as_bool().unwrap_or(false);
            perms.push(json!({"name": name, "granted": granted}));
            if granted && declared.is_some_and(|d| !d.iter().any(|p| p == name)) {
                risks.push(format!(
                    "The exchange grants “{name}”, which this credential does not list; keygate's scope checks still apply, but the key itself can do more."
                ));
            }
        }
        if kc["can_withdraw"] == true {
            risks.push("Withdrawals are enabled at the exchange: whoever holds this key can move funds out. Turn them off unless a bot needs them.".into());
        }
        if kc["can_transfer"] == true {
            risks.push("Universal transfer is enabled at the exchange.".into());
        }
        if kc["ip_restricted"] == false {
            risks.push("The key has no IP restriction at the exchange: it works from anywhere if it leaks. Restrict it to keygate's address.".into());
        }
        if let Some(t) = kc["expires_at"].as_str() {
            risks.push(format!("The exchange takes the key's trading away at {t}."));
        }
    }
    for w in report["warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            if !risks.iter().any(|r| r.contains(w)) {
                risks.push(w.to_string());
            }
        }
    }
    json!({
        "status": report["verification_status"],
        "error": report["error"],
        "synced_at": report["synced_at"],
        "balances": report["balances"],
        "has_check": kc.is_object(),
        "ip_restricted": kc["ip_restricted"],
        "expires_at": kc["expires_at"],
        "permissions": perms,
        "risks": risks,
    })
}

#[derive(serde::Deserialize)]
pub struct CredQuery {
    generated: Option<String>,
}

pub async fn credential(
    State(s): State<AppState>,
    c: Ctx,
    Path(id): Path<Uuid>,
    Query(q): Query<CredQuery>,
) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let notice = q.generated.map(|_| {
        "Key pair generated. Register the public key at the exchange, then attach the API key it gives you.".to_string()
    });
    credential_page(&s, &c, &sess, id, notice, None, json!({}), None).await
}

#[allow(clippy::too_many_arguments)] // page state: notice, error, field errors, key check
pub async fn credential_page(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    id: Uuid,
    notice: Option<String>,
    error: Option<String>,
    errors: Value,
    check: Option<Value>,
) -> Response {
    let cred = c.get(s, sess, &format!("/v1/credentials/{id}")).await;
    if !cred.ok() {
        return render_status(StatusCode::NOT_FOUND, "404.html", Some(sess), json!({}));
    }
    let schedule = c
        .get(s, sess, &format!("/v1/credentials/{id}/rotation-schedule"))
        .await;
    let connections: Vec<Value> = c
        .get(s, sess, "/v1/connections?limit=200")
        .await
        .items()
        .into_iter()
        .filter(|cn| cn["credential_id"] == cred.body["id"])
        .collect();
    let exchange = cred.body["exchange"].as_str().unwrap_or("");
    let environment = cred.body["environment"].as_str().unwrap_or("production");
    let status = cred.body["status"].as_str().unwrap_or("");
    let needs_passphrase = ["okx", "kucoin", "bitget"].contains(&exchange);
    let takes_private_key = ["binance", "binanceusdm", "coinbase"].contains(&exchange);
    let rotatable = ["active", "rotating", "pending"].contains(&status);
    render(
        "credential.html",
        sess,
        json!({
            "cred": cred.body,
            "schedule": schedule.ok().then_some(&schedule.body),
            "connections": connections,
            "register": registration(exchange, environment),
            "needs_passphrase": needs_passphrase,
            "takes_private_key": takes_private_key,
            "rotatable": rotatable,
            "check": check,
            "notice": notice, "error": error, "errors": errors,
        }),
    )
}

/// `POST /ui/credentials/{id}` with one of [`DETAIL_ACTIONS`]; renders the credential page.
pub async fn detail_action(
    s: &AppState,
    c: &Ctx,
    sess: &Session,
    id: Uuid,
    action: &str,
    form: &Form,
) -> Response {
    let version = form.get("version").and_then(|v| v.parse::<i64>().ok());
    let mut check = None;
    let (reply, done) = match action {
        "attach" => {
            let b = json!({"api_key": form.get("api_key").unwrap_or("")});
            (
                c.call(
                    s,
                    sess,
                    Method::POST,
                    &format!("/v1/credentials/{id}/attach-key"),
                    Some(b),
                )
                .await,
                "API key attached; the credential is active.".to_string(),
            )
        }
        "rotate" => {
            let mut b = Map::new();
            b.insert("api_key".into(), json!(form.get("api_key").unwrap_or("")));
            for k in ["api_secret", "passphrase", "private_key"] {
                if let Some(v) = form.text(k) {
                    b.insert(k.into(), json!(v));
                }
            }
            let hours = form.text("grace_hours").unwrap_or_else(|| "0".into());
            let h = match hours.parse::<f64>() {
                Ok(h) if h.is_finite() && h >= 0.0 => h,
                _ => {
                    return credential_page(
                        s,
                        c,
                        sess,
                        id,
                        None,
                        Some("The grace period is not valid.".into()),
                        json!({"grace_period_seconds": "enter a number of hours (0 to 720)"}),
                        None,
                    )
                    .await
                }
            };
            // Out-of-range values go through, for the API's own message.
            b.insert(
                "grace_period_seconds".into(),
                json!((h * 3600.0).round().min(i64::MAX as f64) as i64),
            );
            b.insert("version".into(), json!(version));
            let r = c
                .call(
                    s,
                    sess,
                    Method::POST,
                    &format!("/v1/credentials/{id}/rotate"),
                    Some(Value::Object(b)),
                )
                .await;
            let grace = if h > 0.0 {
                format!("; the previous key keeps signing for {h} h")
            } else {
                String::new()
            };
            let done = format!(
                "Rotated: generation {} signs from now on{grace}.",
                r.body["generation"]
            );
            (r, done)
        }
        "schedule" => {
            // A non-number becomes 0, which the API refuses with its own range message.
            let interval = form
                .text("interval_days")
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(0);
            let mut b = json!({"interval_days": interval});
            if let Some(d) = form.text("next_due") {
                match chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d") {
                    Ok(d) => {
                        b["next_due_at"] =
                            json!(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().to_rfc3339()))
                    }
                    Err(_) => {
                        return credential_page(
                            s,
                            c,
                            sess,
                            id,
                            None,
                            Some("The due date is not valid.".into()),
                            json!({"next_due_at": "enter a date as YYYY-MM-DD"}),
                            None,
                        )
                        .await
                    }
                }
            }
            (
                c.call(
                    s,
                    sess,
                    Method::PUT,
                    &format!("/v1/credentials/{id}/rotation-schedule"),
                    Some(b),
                )
                .await,
                "Rotation schedule saved.".to_string(),
            )
        }
        "schedule_delete" => (
            c.call(
                s,
                sess,
                Method::DELETE,
                &format!("/v1/credentials/{id}/rotation-schedule"),
                None,
            )
            .await,
            "Rotation schedule removed.".to_string(),
        ),
        "keycheck" => {
            let conn = form
                .get("connection_id")
                .and_then(|v| Uuid::parse_str(v).ok());
            let Some(conn) = conn else {
                return credential_page(
                    s,
                    c,
                    sess,
                    id,
                    None,
                    Some("Choose a connection to check the key through.".into()),
                    json!({}),
                    None,
                )
                .await;
            };
            let r = c
                .call(
                    s,
                    sess,
                    Method::POST,
                    &format!("/v1/connections/{conn}/sync"),
                    Some(json!({})),
                )
                .await;
            if r.ok() {
                let declared = c.get(s, sess, &format!("/v1/credentials/{id}")).await.body
                    ["permissions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect::<Vec<_>>()
                    });
                check = Some(key_check_view(&r.body, declared.as_deref()));
            }
            (r, "Key checked with the exchange.".to_string())
        }
        _ => unreachable!("only DETAIL_ACTIONS are routed here"),
    };
    if reply.ok() {
        credential_page(s, c, sess, id, Some(done), None, json!({}), check).await
    } else {
        credential_page(
            s,
            c,
            sess,
            id,
            None,
            Some(reply.message()),
            json!(reply.field_errors()),
            None,
        )
        .await
    }
}

// ---------------------------------------------------------------- shred

/// Crypto-shred all of the user's secrets: the typed confirmation goes to the API
/// unchanged, and the API refuses anything but its exact phrase.
pub async fn shred(State(s): State<AppState>, c: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let sess = match guard(&s, &c, &form).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = c
        .call(
            &s,
            &sess,
            Method::POST,
            "/v1/vault/shred",
            Some(json!({"confirm": form.get("confirm").unwrap_or("")})),
        )
        .await;
    if r.ok() {
        credentials_page(
            &s,
            &c,
            &sess,
            Some("All your secrets were crypto-shredded: your data keys are destroyed and no stored key can be decrypted again.".into()),
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
            Some(format!("Nothing was shredded: {}", r.message())),
            json!(r.field_errors()),
            json!({}),
        )
        .await
    }
}
